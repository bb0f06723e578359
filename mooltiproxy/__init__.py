"""mooltiproxy: a declarative, YAML-driven API-translation reverse proxy for LLM servers."""

__version__ = "2.0.0"
