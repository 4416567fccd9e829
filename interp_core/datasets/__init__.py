"""Synthetic data made in code (no downloads), and the demo model trained on it."""

from interp_core.datasets.shapes import CLASSES, ShapesBatch, make_shapes

__all__ = ["CLASSES", "ShapesBatch", "make_shapes"]
