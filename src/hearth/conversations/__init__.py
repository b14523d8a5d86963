"""Stored conversations of the Responses API (answers kept for `previous_response_id`)."""
