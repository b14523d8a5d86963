"""Operator endpoints under /admin (guarded by the admin key once keys exist)."""
