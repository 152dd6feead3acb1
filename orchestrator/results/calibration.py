"""Calibration of a run's top-1 probabilities (Guo et al. 2017, "On Calibration of Modern Neural
Networks"; Minderer et al. 2021, "Revisiting the Calibration of Modern Neural Networks").

* ECE: 15 equal-width bins of the top-1 probability, ``[k/15, (k+1)/15)`` with the last bin closed
  at 1; ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``, in percent.
* Over-confidence: mean top-1 probability minus Acc@1, in points (negative: under-confident).
* The reliability diagram's data: per bin, the images in it, their mean confidence and accuracy.
* With the run's logits (``predict --save-logits``): NLL (mean ``-log p(true class)``) and the Brier
  score (mean over images of ``sum_k (p_k - [k = true])^2`` over the 1000 classes), the softmax taken in
  float64. Without logits they are unknown: the stored top-5 probabilities do not give them.

Only numpy; correctness comes from the ranking's :class:`~orchestrator.results.truth.Truth`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BINS = 15
NEEDS_LOGITS = "needs logits (run with --save-logits)"


@dataclass(frozen=True)
class Calibration:
    """A run's calibration; ``counts``/``confidence``/``accuracy`` are the reliability diagram's bins
    (confidence and accuracy NaN in an empty bin)."""

    n: int
    acc1: float  # fraction
    mean_confidence: float  # fraction
    ece: float  # percent
    counts: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    accuracy: np.ndarray = field(repr=False)
    nll: float | None = None
    brier: float | None = None
    why_no_nll: str = NEEDS_LOGITS

    @property
    def overconfidence(self) -> float:
        """Mean top-1 confidence minus Acc@1, in points."""
        return 100.0 * (self.mean_confidence - self.acc1)

    def bins(self) -> list[dict[str, float | int | None]]:
        """The reliability diagram as JSON-able rows: bin edges, count, mean confidence, accuracy."""
        out = []
        for k in range(N_BINS):
            c = int(self.counts[k])
            out.append({"low": k / N_BINS, "high": (k + 1) / N_BINS, "count": c,
                        "confidence": float(self.confidence[k]) if c else None,
                        "accuracy": float(self.accuracy[k]) if c else None})
        return out


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of each probability: ``floor(p * n_bins)``, 1.0 in the last bin; values are clipped to [0, 1]."""
    p = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray,
                n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean confidence, accuracy) per bin; NaN where a bin is empty."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    idx = bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sums_c = np.bincount(idx, weights=conf, minlength=n_bins)
    sums_a = np.bincount(idx, weights=right, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, sums_c / counts, sums_a / counts


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error in percent (equal-width bins; see the module docstring)."""
    counts, conf, acc = reliability(confidence, correct, n_bins)
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    full = counts > 0
    return 100.0 * float(np.sum(counts[full] * np.abs(acc[full] - conf[full])) / n)


def nll_brier(logits: np.ndarray, labels: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """(mean NLL in nats, mean Brier score) of ``logits`` (N x C) against integer ``labels``; the softmax
    in float64, computed ``chunk`` rows at a time."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    total_nll = total_brier = 0.0
    for start in range(0, n, chunk):
        z = np.asarray(logits[start:start + chunk], dtype=np.float64)
        y = labels[start:start + chunk]
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        rows = np.arange(len(y))
        total_nll -= float(log_p[rows, y].sum())
        p = np.exp(log_p)
        p[rows, y] -= 1.0
        total_brier += float((p * p).sum())
    return (total_nll / n, total_brier / n) if n else (float("nan"), float("nan"))


def calibration(confidence: np.ndarray, correct: np.ndarray, logits: np.ndarray | None = None,
                labels: np.ndarray | None = None, why_no_nll: str = NEEDS_LOGITS) -> Calibration:
    """The calibration of top-1 probabilities ``confidence`` whose top-1 is ``correct``; NLL and Brier
    from ``logits`` and their single ``labels`` when both are given (same rows)."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    if conf.shape != right.shape:
        raise ValueError(f"calibration: {conf.shape[0]} confidences for {right.shape[0]} correctness values")
    counts, mean_c, acc = reliability(conf, right)
    n = int(conf.shape[0])
    nll = brier = None
    if logits is not None and labels is not None:
        nll, brier = nll_brier(logits, labels)
        why_no_nll = ""
    return Calibration(n=n, acc1=float(right.mean()) if n else float("nan"),
                       mean_confidence=float(conf.mean()) if n else float("nan"), ece=ece(conf, right),
                       counts=counts, confidence=mean_c, accuracy=acc, nll=nll, brier=brier, why_no_nll=why_no_nll)
