"""@memory: the agent that remembers what an agent mesh reports and answers questions about it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
