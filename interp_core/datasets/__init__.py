"""Synthetic data made in code (no downloads)."""

from interp_core.datasets.shapes import CLASSES, ShapesBatch, make_shapes

__all__ = ["CLASSES", "ShapesBatch", "make_shapes"]
