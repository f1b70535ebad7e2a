"""The version of embedx: one source, read by the build (pyproject) and by the code."""

__version__ = "0.3.0"
