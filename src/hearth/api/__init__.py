"""The HTTP surface: OpenAI-compatible endpoints, health, and the error mapper."""
