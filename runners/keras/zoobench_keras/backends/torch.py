"""Keras on PyTorch (the ``keras-torch`` image): eager inference under ``torch.inference_mode()``,
deterministic algorithms, TF32 off at fp32 (``allow_tf32``), the CUDA build from ``torch.version.cuda``
and ``torch._C._cuda_getArchFlags()``, as the pytorch runner reads it."""
from __future__ import annotations

import os
from typing import Any, Callable, ContextManager

# Before CUDA starts: cuBLAS needs a fixed workspace for torch.use_deterministic_algorithms (CUDA >= 10.2).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zoobench_contract.gpubuild import GpuBuild, torch_build  # noqa: E402

from . import BackEnd as _Base  # noqa: E402

SEED = 0
EAGER_NOTE = ("keras on torch runs eagerly (one torch op per Keras op, under torch.inference_mode); "
              "no compiled mode is offered")


class BackEnd(_Base):
    name = "torch"
    label = "PyTorch"

    def version(self) -> str:
        return torch.__version__

    def setup(self) -> None:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    def gpus(self) -> list[str]:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]

    def has_gpu(self) -> bool:
        return torch.cuda.is_available()

    def placement(self, device: str) -> str:
        return "cuda:0" if device.startswith("cuda") else "cpu"

    def scope(self, placement: str) -> ContextManager[Any]:
        import keras

        return keras.device(placement)  # where Keras creates the variables (torch Parameters)

    def compile(self, model: Any, placement: str, jit: bool) -> Callable[[Any], Any]:
        def infer(x: torch.Tensor) -> torch.Tensor:
            return model(x, training=False)

        return infer

    def _run(self, loaded: Any, x: torch.Tensor) -> np.ndarray:
        import keras

        with keras.device(loaded.placement):  # Keras moves inputs to its current device
            out = loaded.fn(x)
        return out.float().cpu().numpy()

    def predict(self, loaded: Any, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.tensor(np.asarray(batch, np.float32), device=loaded.placement)  # a copy: the batch may be read-only
            return self._run(loaded, x)

    def predict_pixels(self, loaded: Any, pixels: np.ndarray, norm: Any) -> np.ndarray:
        device = loaded.placement
        with torch.inference_mode():
            x = torch.tensor(np.asarray(pixels, np.uint8), device=device).float()
            if not norm.identity_order:
                x = x[..., list(norm.order)]
            x = x * torch.tensor(norm.scale, dtype=torch.float32, device=device) \
                + torch.tensor(norm.offset, dtype=torch.float32, device=device)
            return self._run(loaded, x)

    def set_precision(self, precision: str) -> dict[str, Any]:
        """fp32: no TF32 in matmuls or cuDNN convolutions; tf32 and bf16: both allowed."""
        fast = precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
        torch.set_float32_matmul_precision("high" if fast else "highest")
        return {"allow_tf32": fast, "float32_matmul_precision": torch.get_float32_matmul_precision()}

    def mode_settings(self, mode: str) -> dict[str, Any]:
        return {"eager": True, "torch_inference_mode": True, "note": EAGER_NOTE}

    def peak_memory(self) -> int | None:
        """The peak bytes torch allocated on the GPU since :meth:`reset_peak_memory` (None on the CPU)."""
        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None

    def reset_peak_memory(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def gpu_build(self) -> GpuBuild:
        return gpu_build()

    def environment(self) -> dict[str, Any]:
        cuda = torch.cuda.is_available()
        return {
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cuda_build": bool(torch.version.cuda),
            "gpu_build": gpu_build().to_dict(),
            "gpus": self.gpus(),
            "modes": ["default"],
            "mode_note": EAGER_NOTE,
            "torch_threads": torch.get_num_threads(),
            "deterministic": {
                "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cudnn.benchmark": torch.backends.cudnn.benchmark,
                "cudnn.deterministic": torch.backends.cudnn.deterministic,
                "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                "seed": SEED,
            },
        }


def gpu_build() -> GpuBuild:
    """This torch's CUDA build (:func:`zoobench_contract.gpubuild.torch_build`)."""
    return torch_build(torch)
