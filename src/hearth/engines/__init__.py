"""Engines: processes Hearth starts, health-checks, restarts and stops, one launcher per kind."""
