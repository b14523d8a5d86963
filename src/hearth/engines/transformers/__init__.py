"""Hearth's own engine for Hugging Face model folders (the `hearth-gateway[transformers]` extra)."""
