"""The one request path every protocol shares: admit → route → relay → account."""
