"""zoobench runner contract: framework-free code shared by every runner image."""
__version__ = "0.1.0"
