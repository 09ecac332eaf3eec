"""Fails on import."""

raise ImportError("No module named 'imaginary_runtime'")
