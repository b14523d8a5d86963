"""Hearth: a self-hosted LLM server and gateway with an OpenAI-compatible API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hearth-gateway")  # the distribution's name; the package is `hearth`
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
