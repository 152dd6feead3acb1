"""``predict bench`` (being written): timm-style timing of a model on synthetic input."""
from __future__ import annotations


def bench_cmd() -> None:
    """Time the model on synthetic uint8 input at several batch sizes (stub)."""
    raise NotImplementedError
