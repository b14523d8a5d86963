"""The command engine: any OpenAI-compatible server, started from the command line a model entry
gives."""
