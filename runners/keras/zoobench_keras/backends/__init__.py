"""The Keras 3 back end of this image: ``KERAS_BACKEND`` (the image's ENV, from images.yaml build_args)
selects ``tensorflow`` (the ``keras`` image), ``jax`` (``keras-jax``) or ``torch`` (``keras-torch``).

The runner (:mod:`zoobench_keras.backend`) is the same on every back end; what differs lives in one small
module per back end, each a :class:`BackEnd` subclass named ``BackEnd``:

- device placement (:meth:`BackEnd.placement`, :meth:`BackEnd.scope`);
- the compiled inference function and the predict calls (:meth:`BackEnd.compile`, :meth:`BackEnd.predict`,
  :meth:`BackEnd.predict_pixels`);
- precision (:meth:`BackEnd.set_precision`: TF32 on TensorFlow, the default matmul precision on JAX,
  ``allow_tf32`` on PyTorch; Keras' dtype policy is set by the runner);
- GPUs and their peak memory, determinism, the execution modes, and the CUDA build (:meth:`BackEnd.gpu_build`).

Only the selected module is imported, so TensorFlow is imported on the tensorflow back end alone.
The module must be imported before ``keras`` (a back end may set environment variables its framework
reads at start-up, e.g. ``XLA_FLAGS``).
"""
from __future__ import annotations

import importlib
import os
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import numpy as np

NAMES = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"


def selected() -> str:
    """The back end this process runs: ``KERAS_BACKEND`` (default tensorflow, as Keras itself)."""
    name = os.environ.get("KERAS_BACKEND") or DEFAULT
    if name not in NAMES:
        raise RuntimeError(f"KERAS_BACKEND={name!r}: the keras runner serves {', '.join(NAMES)}")
    return name


def load(name: str) -> "BackEnd":
    """Import the back end's module (and its framework) and return its :class:`BackEnd`."""
    return importlib.import_module(f"{__name__}.{name}").BackEnd()


class BackEnd:
    """What one Keras back end provides to the runner. ``LoadedModel`` is
    :class:`zoobench_keras.backend.LoadedModel`: ``model``, ``placement`` and the compiled ``fn``."""

    name = "?"
    label = "?"  # the framework's name in messages ("TensorFlow sees no GPU")

    def version(self) -> str:
        """The version of the back end's framework (``keras_backend_version``)."""
        raise NotImplementedError

    def setup(self) -> None:
        """Once, before any model: memory growth, determinism switches."""

    def warm_up(self) -> None:
        """Initialise the runtime now (inside the runner's silenced-stderr block)."""

    def gpus(self) -> list[str]:
        """The names of the GPUs this process sees (empty on a CPU host or build)."""
        return []

    def has_gpu(self) -> bool:
        return bool(self.gpus())

    def placement(self, device: str) -> str:
        """The contract's device (``cpu``, ``cuda:0``) as the back end names it."""
        return "gpu:0" if device.startswith("cuda") else "cpu:0"

    def scope(self, placement: str) -> ContextManager[Any]:
        """Where variables are created while a model is built."""
        return nullcontext()

    def compile(self, model: Any, placement: str, jit: bool) -> Callable[[Any], Any]:
        """The model's inference function (``training=False``) for any batch size."""
        raise NotImplementedError

    def predict(self, loaded: Any, batch: np.ndarray) -> np.ndarray:
        """NHWC float32, already normalised -> float32 logits."""
        raise NotImplementedError

    def predict_pixels(self, loaded: Any, pixels: np.ndarray, norm: Any) -> np.ndarray:
        """NHWC uint8 -> float32 logits, normalised on the model's device with one multiply-add."""
        raise NotImplementedError

    def set_precision(self, precision: str) -> dict[str, Any]:
        """fp32 / tf32 switches of the framework (bf16 is Keras' policy); returns what was set."""
        return {}

    def modes(self) -> list[str]:
        """Execution modes besides ``default``."""
        return []

    def mode_settings(self, mode: str) -> dict[str, Any]:
        """What ``mode`` means here (run.json ``mode_settings``)."""
        return {}

    def peak_memory(self) -> int | None:
        return None

    def reset_peak_memory(self) -> None:
        pass

    def gpu_build(self) -> Any:
        """:class:`zoobench_contract.gpubuild.GpuBuild` of the framework (no GPU needed)."""
        raise NotImplementedError

    def environment(self) -> dict[str, Any]:
        """The back end's facts for ``predict info``: CUDA, cuDNN, GPUs, threads, determinism."""
        return {}
