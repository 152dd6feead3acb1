"""The records of a ranking: the evaluation set a run was made on (EvalSet), one scored run
(ModelResult), one ranked row (RankRow), and the significance level (ALPHA) that marks a row
significantly better than the next."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import Calibration

ALPHA = 0.05
DEFAULT_SET = "imagenet-val"  # what a run that records no ``dataset`` was made on


@dataclass(frozen=True)
class EvalSet:
    """The evaluation set of a run as its run.json says (``dataset``, ``data.generated``), with what
    manifests/datasets.yaml says of it; runs are grouped (and never ranked across) by :attr:`key`."""

    name: str = DEFAULT_SET
    generated: bool = False
    title: str = "ImageNet-1k validation"
    default: bool = True
    layout: str = "wnid"
    scoring: str = "accuracy"  # accuracy | corruption
    clean: str | None = None  # the set whose Acc@1 is this one's clean reference
    class_subset: str | None = None
    corruptions: tuple[str, ...] = ()
    extra_corruptions: tuple[str, ...] = ()
    severities: int | None = None
    known: bool = True  # in the manifest

    @property
    def key(self) -> tuple[str, bool]:
        return self.name, self.generated

    @property
    def label(self) -> str:
        """``imagenet-c`` or ``imagenet-c (generated)``."""
        return self.name + (" (generated)" if self.generated else "")

    @property
    def heading(self) -> str:
        """The title up to its parenthesis, and "(generated)" for a generated set: ``ImageNet-C (generated)``."""
        short = self.title.split(" (", 1)[0].strip() or self.name
        return short + (" (generated)" if self.generated else "")

    @property
    def shifted(self) -> bool:
        """A set with a clean reference (V2, R, A, Sketch, C): one `zoobench robustness` reports on."""
        return self.clean is not None


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
    eval_set: EvalSet = field(default_factory=EvalSet)
    classes: str | None = None  # the class subset the logits were restricted to ("imagenet-r, 200 classes")
    # scoring "corruption" only: (corruption, severity) -> (top-1 right, images scored)
    by_corruption: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict, repr=False)
    mode: str = "default"  # execution mode (run.json ``mode``)
    params_m: float | None = None  # parameters, millions (run.json model_facts)
    gmacs: float | None = None  # multiply-adds per image, billions (model_facts; at its input_size)
    latency_ms: float | None = None  # batch-1 step time p50 (speed/.../bench.json)
    best_ips: float | None = None  # best samples/s of the speed benchmark, at batch size best_batch
    best_batch: int | None = None
    peak_memory_bytes: int | None = None  # at best_batch
    calibration: Calibration | None = field(default=None, repr=False)  # None: no top-1 probabilities stored
    crop_size: int | None = None  # run.json preprocessing
    resize_size: int | None = None
    interpolation: str | None = None
    platform_note: str = ""  # a converted run's source ("pytorch resnet50"), Keras' back end ("jax 0.10.2")

    @property
    def platform(self) -> str:
        base = f"{self.framework} {self.framework_version}".strip()
        return f"{base} ({self.platform_note})" if self.platform_note else base

    @property
    def ece(self) -> float | None:
        """Expected calibration error, percent (15 bins of the top-1 probability)."""
        return None if self.calibration is None else self.calibration.ece

    @property
    def overconfidence(self) -> float | None:
        """Mean top-1 confidence minus Acc@1, points."""
        return None if self.calibration is None else self.calibration.overconfidence

    @property
    def nll(self) -> float | None:
        return None if self.calibration is None else self.calibration.nll

    @property
    def brier(self) -> float | None:
        return None if self.calibration is None else self.calibration.brier

    def costs(self) -> dict[str, Any]:
        """The cost and calibration fields of the JSON/CSV rows (None when unknown)."""
        cal = self.calibration
        return {"mode": self.mode, "params_m": self.params_m, "gmacs": self.gmacs, "latency_ms": self.latency_ms,
                "best_samples_per_second": self.best_ips, "best_batch_size": self.best_batch,
                "peak_memory_bytes": self.peak_memory_bytes, "ece_pct": self.ece,
                "mean_confidence": None if cal is None else cal.mean_confidence,
                "overconfidence_points": self.overconfidence, "nll": self.nll, "brier": self.brier,
                "crop_size": self.crop_size, "resize_size": self.resize_size, "interpolation": self.interpolation}


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
            "labels": r.labels, "n_images": r.n_images, "dataset": r.eval_set.name,
            "generated": r.eval_set.generated, "classes": r.classes, **r.costs(),
            "reliability": None if r.calibration is None else r.calibration.bins(),
        }
