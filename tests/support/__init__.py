"""Helpers for tests, imported as `support.*` (tests/conftest.py puts tests/ on the import path):
fakes that inject faults (an engine, its launcher, an HTTP upstream) and real-process wrappers."""
