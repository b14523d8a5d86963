"""Accounting per request: usage rows written in batches, hourly roll-ups, reports."""
