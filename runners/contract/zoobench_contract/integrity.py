"""What a run proves about itself: inference left the model unchanged, and which outputs it gave.

The seed's complaints about pretrained Keras models (weights that change during inference through
batch normalisation; outputs that differ when run alongside other models) become two records of
every ``predict run``:

- ``parameters``: a sha256 over every parameter and buffer (batch-norm statistics included) read
  through the backend's ``state_arrays`` before and after inference; they must be equal, else the
  run fails (:class:`StateChanged`);
- ``determinism``: the sha256 of the outputs (paths, top-k indices and scores) beside the
  framework's determinism settings, so two runs of the same model on the same data can be told
  bitwise equal from their run.json alone.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np


class StateChanged(RuntimeError):
    """Inference changed the model's parameters or buffers (the message is one line)."""


def state_digest(arrays: Iterable[tuple[str, np.ndarray]]) -> tuple[str, int, int]:
    """(sha256 over names, dtypes, shapes and bytes in order, number of arrays, number of values)."""
    h = hashlib.sha256()
    count = values = 0
    for name, array in arrays:
        a = np.ascontiguousarray(array)
        h.update(f"{name}\t{a.dtype.str}\t{a.shape}\n".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
        count += 1
        values += int(a.size)
    return "sha256:" + h.hexdigest(), count, values


def state_of(backend: Any, model: Any) -> tuple[str, int, int] | None:
    """The digest of ``model``'s state through the backend's optional ``state_arrays``; None without it."""
    if not hasattr(backend, "state_arrays"):
        return None
    return state_digest(backend.state_arrays(model))


def parameters_record(before: tuple[str, int, int] | None, after: tuple[str, int, int] | None,
                      framework: str) -> dict[str, Any] | None:
    """run.json's ``parameters``; raises :class:`StateChanged` when inference changed the state."""
    if before is None or after is None:
        return None
    if before != after:
        raise StateChanged(f"the model's parameters or buffers changed during inference ({before[0][:19]} before, "
                           f"{after[0][:19]} after: batch-norm statistics updated?); {framework} must run it in "
                           "inference mode")
    return {"sha256_before": before[0], "sha256_after": after[0], "unchanged": True, "arrays": before[1],
            "values": before[2]}


def outputs_digest(paths: list[str], indices: np.ndarray, scores: np.ndarray) -> str:
    """sha256 over the predicted paths, top-k indices (int64) and scores (float32), in row order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode() + b"\n")
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(scores, dtype=np.float32).tobytes())
    return "sha256:" + h.hexdigest()


def determinism_record(paths: list[str], indices: np.ndarray, scores: np.ndarray, settings: Any,
                       precision: str) -> dict[str, Any]:
    """run.json's ``determinism``: the outputs' digest and the settings that make a re-run equal."""
    return {"outputs_sha256": outputs_digest(paths, indices, scores), "settings": settings,
            "precision": precision, "expected_bitwise": precision == "fp32"}
