"""Seeing Hearth work: metrics, request ids, request logs."""
