"""Who may call: API keys (stored hashed), scopes, rate limits and budgets."""
