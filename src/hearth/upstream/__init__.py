"""Talking to engines and remote upstreams over HTTP."""
