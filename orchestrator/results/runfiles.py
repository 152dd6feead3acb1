"""Reading a results folder's run files: the run folders below it (:func:`find_runs`), a run's name,
its run.json (:func:`read_run_json`, :func:`run_field`) and its predictions.npz, checked
(:func:`read_predictions`); every problem is one :class:`~orchestrator.errors.RankError` line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoobench_contract.outputs import PREDICTIONS_FILE, RUN_FILE

from ..bench.layout import LOGS_DIR, OLD_SUFFIX, PARTIAL_SUFFIX
from ..errors import LabelError, RankError, first_line

SKIP_SUFFIXES = (PARTIAL_SUFFIX, OLD_SUFFIX)
SKIP_NAMES = {LOGS_DIR}
N_CLASSES = 1000


ERRORS = (RankError, LabelError)


# ---------------------------------------------------------------- loading

def _skipped(name: str) -> bool:
    return name in SKIP_NAMES or name.startswith(".") or name.endswith(SKIP_SUFFIXES)


def find_runs(results_dir: Path) -> list[Path]:
    """Run folders (holding run.json or predictions.npz) at any depth below ``results_dir``, or
    ``results_dir`` itself; a run folder is not searched further, and logs/, hidden, ``*.partial``
    and ``*.old`` folders are skipped."""
    found: list[Path] = []
    for top, dirs, files in os.walk(results_dir):
        if RUN_FILE in files or PREDICTIONS_FILE in files:
            found.append(Path(top))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not _skipped(d))
    return sorted(found)


def run_name(results_dir: Path, run_dir: Path) -> str:
    """A run's name: its folder's path below ``results_dir`` ("pytorch-resnet50", "gpu/keras-vgg16")."""
    rel = run_dir.relative_to(results_dir).as_posix()
    return run_dir.name if rel == "." else rel


def run_field(run: dict[str, Any], path: str, where: Path) -> Any:
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise RankError(f"{where}: field {path!r} is missing; re-run this model (the file predates the contract)")
        value = value[key]
    return value


def read_run_json(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RankError(f"{path}: unreadable ({type(exc).__name__}); delete the run folder and re-run it") from None
    if not isinstance(run, dict):
        raise RankError(f"{path}: not a JSON object; delete the run folder and re-run it")
    if run.get("schema_version") != 1:
        raise RankError(f"{path}: schema_version {run.get('schema_version')!r}, this zoobench reads 1; "
                        "re-run the model with a matching image")
    return run


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``paths``, ``topk_indices`` and ``topk_scores`` of a predictions.npz, checked; the scores are None
    when absent or not float N x K (ranking does not need them)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("paths", "topk_indices") if k not in z.files]
            if missing:
                raise RankError(f"{path}: array {missing[0]!r} is missing; re-run this model")
            paths, topk = z["paths"], z["topk_indices"]
            scores = z["topk_scores"] if "topk_scores" in z.files else None
    except RankError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable npz is one user-facing line
        first = first_line(exc)
        raise RankError(f"{path}: unreadable ({type(exc).__name__}: {first}); delete the run folder and re-run it") \
            from None
    if paths.ndim != 1 or paths.dtype.kind != "U":
        raise RankError(f"{path}: 'paths' must be a 1-D unicode array; re-run this model")
    if topk.ndim != 2 or topk.shape[0] != paths.shape[0] or topk.shape[1] < 5 or topk.dtype.kind not in "iu":
        raise RankError(f"{path}: 'topk_indices' must be integer N x K with N = {paths.shape[0]} and K >= 5 "
                        f"(got {topk.dtype} {topk.shape}); re-run this model")
    if scores is not None and (scores.shape != topk.shape or scores.dtype.kind != "f"):
        scores = None
    bad = _bad_row(topk, scores)
    if bad is not None:
        row, why = bad
        raise RankError(f"{path}: row {row} ({paths[row]}) {why}; the run is unusable, delete the run folder and "
                        "re-run it")
    return paths, topk, scores


def _bad_row(topk: np.ndarray, scores: np.ndarray | None) -> tuple[int, str] | None:
    """The first row of a top-k that is no ranking of distinct ImageNet classes with finite scores."""
    outside = ((topk < 0) | (topk >= N_CLASSES)).any(axis=1)
    ordered = np.sort(topk, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    infinite = ~np.isfinite(scores).all(axis=1) if scores is not None else np.zeros(len(topk), bool)
    rows = np.flatnonzero(outside | repeated | infinite)
    if rows.size == 0:
        return None
    i = int(rows[0])
    if outside[i]:
        cls = int(next(c for c in topk[i] if not 0 <= c < N_CLASSES))
        return i, f"holds class {cls}, outside the ImageNet classes 0..{N_CLASSES - 1}"
    if repeated[i]:
        cls = int(ordered[i, 1:][ordered[i, 1:] == ordered[i, :-1]][0])
        return i, f"repeats class {cls} in its top-{topk.shape[1]}"
    return i, f"has a non-finite score ({next(s for s in scores[i] if not np.isfinite(s))})"  # type: ignore[index]
