"""The llama.cpp engine: `llama-server`, found or built, one process per loaded model."""
