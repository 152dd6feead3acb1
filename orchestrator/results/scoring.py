"""What a scored run gains beside its accuracy (:func:`with_costs`): its calibration (from the stored
top-1 probabilities, NLL/Brier from the stored logits), its model facts (parameters, GMACs), its speed
(the matching ``speed/*/bench.json``, :mod:`.costs`), its mode and preprocessing."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from zoobench_contract.outputs import PREDICTIONS_FILE

from .calibration import NEEDS_LOGITS, Calibration, calibration
from .costs import Speed, gmacs, params_m, preprocessing_of, run_mode, speed_of
from .records import ModelResult
from .truth import Truth

LOGITS = "logits"


def _logits(run_dir: Path, n_rows: int) -> np.ndarray | None:
    """The N x C ``logits`` of a predictions.npz, None when absent or not N x C floats."""
    try:
        with np.load(run_dir / PREDICTIONS_FILE, allow_pickle=False) as z:
            if LOGITS not in z.files:
                return None
            logits = z[LOGITS]
    except Exception:  # noqa: BLE001 - the ranking has read this file already; logits are optional
        return None
    if logits.ndim != 2 or logits.shape[0] != n_rows or logits.dtype.kind != "f" or not np.isfinite(logits).all():
        return None
    return logits


def run_calibration(run_dir: Path, scores: np.ndarray | None, truth: Truth,
                    correct1: np.ndarray) -> Calibration | None:
    """The calibration of a run's scored rows; None without top-1 probabilities."""
    if scores is None:
        return None
    confidence = np.asarray(scores[truth.keep, 0], dtype=np.float64)
    if truth.kind != "imagenet":
        return calibration(confidence, correct1, why_no_nll=f"NLL/Brier need one label per image ({truth.kind})")
    logits = _logits(run_dir, truth.n_images)
    labels = truth.sets[:, 0]
    if logits is not None and int(labels.max(initial=0)) >= logits.shape[1]:
        logits = None
    return calibration(confidence, correct1, None if logits is None else logits[truth.keep], labels,
                       why_no_nll=NEEDS_LOGITS)


def with_costs(result: ModelResult, run: dict[str, Any], speeds: list[Speed], scores: np.ndarray | None,
               truth: Truth) -> ModelResult:
    """``result`` with its calibration, model facts, speed, mode and preprocessing filled in."""
    speed = speed_of(run, speeds)
    crop, resize, interp = preprocessing_of(run)
    return dataclasses.replace(
        result, mode=run_mode(run), params_m=params_m(run), gmacs=gmacs(run),
        latency_ms=None if speed is None else speed.latency_ms, best_ips=None if speed is None else speed.best_ips,
        best_batch=None if speed is None else speed.best_batch,
        peak_memory_bytes=None if speed is None else speed.peak_memory_bytes,
        calibration=run_calibration(result.run_dir, scores, truth, result.correct1),
        crop_size=crop, resize_size=resize, interpolation=interp)
