"""Routing: which deployment answers a request for a public model name."""
