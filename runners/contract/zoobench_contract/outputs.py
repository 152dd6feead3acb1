"""The contract's output files, written atomically (temp file in the same folder + rename)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

SCHEMA_VERSION = 1
PREDICTIONS_FILE = "predictions.npz"
RUN_FILE = "run.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb", fsync: bool = True) -> None:
    """Write through ``write(fileobj)`` into a temp file next to ``path``, then rename it over.

    ``fsync=False`` skips the flush to disk (bulk copies that a re-run verifies anyway)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), mode="w")


def write_predictions(
    path: Path,
    paths: list[str],
    topk_indices: np.ndarray,
    topk_scores: np.ndarray,
    logits: np.ndarray | None = None,
    logits_dtype: str = "float16",
) -> None:
    arrays: dict[str, np.ndarray] = {
        "paths": np.asarray(paths, dtype=np.str_),
        "topk_indices": np.asarray(topk_indices, dtype=np.int64),
        "topk_scores": np.asarray(topk_scores, dtype=np.float32),
    }
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=logits_dtype)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def softmax_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over classes (float64 for stability), then the ``k`` best, sorted descending.

    Ties keep the lower class index first (stable sort), so the order is deterministic.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(p, order, axis=1).astype(np.float32)
