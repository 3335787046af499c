"""starbuild: a declarative asset builder for StarMagic images."""

__version__ = "0.1.0"
