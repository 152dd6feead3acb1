"""Validation data: prepare ImageNet val into synset folders, check a folder, make the sample set."""
from .ground_truth import N_VAL, PER_CLASS, is_val_name, val_ground_truth

__all__ = ["N_VAL", "PER_CLASS", "is_val_name", "val_ground_truth"]
