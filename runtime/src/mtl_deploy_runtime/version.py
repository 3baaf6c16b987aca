"""The library version, recorded in every checkpoint and export manifest."""

__version__ = "0.1.0"
