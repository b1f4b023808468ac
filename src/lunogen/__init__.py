"""LunoGen: a self-hostable platform for hosting AI agents."""

__version__ = "0.1.0"
