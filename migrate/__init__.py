"""llama-migrate: move code that embeds llama.cpp across breaking releases, and prove the move worked."""

__version__ = "0.1.0"
