"""Load generation against any OpenAI-compatible server: `hearth bench` and its Python API
(`hearth.loadgen.load.run_load`)."""

DEFAULT_REQUESTS = 100  # measured requests per level when neither a count nor a duration is given
