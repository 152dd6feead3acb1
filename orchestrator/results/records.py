"""The records of a ranking: one scored run (ModelResult), one ranked row (RankRow), and the
significance level (ALPHA) that marks a row significantly better than the next."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05


@dataclass
class ModelResult:
    """One finished run, scored."""

    run: str
    run_dir: Path
    framework: str
    framework_version: str
    model: str
    weights: str
    n: int
    acc1: float
    acc5: float
    ci1: tuple[float, float]
    ci5: tuple[float, float]
    images_per_second: float | None
    data_digest: str
    device: str = ""
    batch_size: int | None = None
    precision: str = "fp32"
    correct1: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    correct5: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    labels: str = "imagenet"  # what acc1/acc5 are scored against: "imagenet" (one label) or "real"
    n_images: int = 0  # images predicted; ``n`` of them are scored (all but those without a ReaL label)

    @property
    def platform(self) -> str:
        return f"{self.framework} {self.framework_version}".strip()


@dataclass
class RankRow:
    """A ranked result; ``p_vs_next`` compares Acc@1 with the row below (None on the last row)."""

    result: ModelResult
    rank1: int
    rank5: int
    p_vs_next: float | None
    significant_vs_next: bool | None

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "run": r.run, "platform": r.platform, "framework": r.framework,
            "framework_version": r.framework_version, "model": r.model, "weights": r.weights, "n": r.n,
            "acc1": r.acc1, "acc5": r.acc5, "acc1_ci": list(r.ci1), "acc5_ci": list(r.ci5),
            "rank1": self.rank1, "rank5": self.rank5, "images_per_second": r.images_per_second,
            "p_vs_next": self.p_vs_next, "significant_vs_next": self.significant_vs_next,
            "device": r.device, "batch_size": r.batch_size, "precision": r.precision, "data_digest": r.data_digest,
            "labels": r.labels, "n_images": r.n_images,
        }
