"""The tiny per-framework adapter (MLPerf ``Backend`` style) that each runner image provides.

A runner package registers one class under the ``zoobench.backend`` entry-point group. The
contract's CLI does everything else: listing images, decoding and preprocessing them (one
Pillow pipeline for all frameworks), batching, top-k, output files and errors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np

from .preprocessing import Preprocessing

WEIGHTS_MOUNT = "/weights"  # where every runner image keeps (and the orchestrator mounts) the weights cache


def weights_file_under(path: str | os.PathLike[str]) -> str | None:
    """``path`` relative to :data:`WEIGHTS_MOUNT` (POSIX), or None when it lies elsewhere."""
    rel = os.path.relpath(os.path.abspath(path), WEIGHTS_MOUNT)
    return None if rel == ".." or rel.startswith("../") else rel.replace(os.sep, "/")


@dataclass(frozen=True)
class ModelSpec:
    """One model an image serves, with the preprocessing its published weights expect."""

    name: str
    preprocessing: Preprocessing
    weights: str
    """What ``--weights imagenet`` loads, e.g. ``torchvision:ResNet50_Weights.IMAGENET1K_V2``."""
    weights_bundled: bool = False
    """True when the pretrained weights ship inside the image (no fetch step needed)."""
    num_classes: int = 1000
    weights_files: dict[str, str] = field(default_factory=dict)
    """``--weights`` choice (``imagenet``, ``imagenet:VARIANT``) -> the file it reads, relative to
    :data:`WEIGHTS_MOUNT` (the host's ``.cache/weights``), so the orchestrator can tell a missing
    file before any container; empty when bundled or not known."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "preprocessing": self.preprocessing.to_dict(),
            "weights": self.weights,
            "weights_bundled": self.weights_bundled,
            "num_classes": self.num_classes,
            "weights_files": self.weights_files,
            **self.extra,
        }


class WeightsUnavailable(RuntimeError):
    """The pretrained weights are neither bundled nor in the weights cache."""


class UsageError(ValueError):
    """A request the backend cannot serve as asked (bad weights variant, option...): exit code 2."""


class DeviceUnavailable(UsageError):
    """The requested device (e.g. ``--device cuda``) is not visible in this container."""


class Backend(Protocol):
    """What a framework runner implements. Inputs are NHWC float32, already normalised."""

    framework: str

    def framework_version(self) -> str: ...

    def models(self) -> list[ModelSpec]: ...

    def environment(self) -> dict[str, Any]:
        """Framework-specific facts for ``predict info``: CUDA, cuDNN, GPUs, determinism flags."""
        ...

    def resolve_device(self, requested: str) -> str:
        """``auto|cpu|cuda`` -> the device actually used (``cpu``, ``cuda:0``...)."""
        ...

    def load(self, spec: ModelSpec, weights: str, device: str) -> Any:
        """Build the model in inference mode. ``weights`` is ``imagenet``, ``random`` or a file."""
        ...

    def fetch_weights(self, spec: ModelSpec, weights: str = "imagenet") -> str:
        """Download the pretrained weights into the cache (the only step with network)."""
        ...

    def predict(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """NHWC float32 batch -> float32 logits (N x num_classes)."""
        ...

    def state_arrays(self, model: Any) -> Iterable[tuple[str, np.ndarray]]:
        """Every parameter and buffer of ``model`` (batch-norm statistics included) as (name, array),
        in a fixed order: ``predict run`` digests them before and after inference and fails if
        inference changed any. A backend without it records ``parameters: null`` with the reason."""
        ...

    # Optional: ``preprocessing_for(spec, weights) -> Preprocessing``, the preprocessing of the weights
    # ``weights`` selects when a variant (``imagenet:VARIANT``) was trained with other transforms; its
    # `predict list` entry then lists them as ``weights_variants``.
    # Optional: ``weights_path(spec, weights) -> str | None``, the file the last ``load`` of
    # ``spec`` read its ``imagenet`` weights from (None: random or built in code). The CLI records
    # that file's sha256 in run.json, so a changed weights cache is noticed.
