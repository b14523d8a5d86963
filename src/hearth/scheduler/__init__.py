"""Which local models are loaded: load on demand, keep_alive idle unload."""
