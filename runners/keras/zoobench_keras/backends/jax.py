"""Keras on JAX (the ``keras-jax`` image): inference is always ``jax.jit``-compiled (Keras'
``stateless_call`` traced once per batch shape, the variables passed as arguments), XLA's deterministic
GPU ops, the default matmul precision ``float32`` at fp32 (JAX would otherwise let the GPU use TF32),
and the CUDA build read from the cuda plugin (``jax_cuda12_plugin._versions``) with the architectures
the image's manifest declares (``ZOOBENCH_GPU_ARCHS``: JAX cannot tell them)."""
from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Callable, ContextManager

# Before JAX starts its backends: allocate GPU memory as needed (so an OOM is a real OOM, as TensorFlow's
# memory growth does; the orchestrator halves the batch) and make XLA's GPU kernels deterministic.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"
if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DETERMINISM_FLAG}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from zoobench_contract.gpubuild import GpuBuild  # noqa: E402

from . import BackEnd as _Base  # noqa: E402

SEED = 0
PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin", "jax-cuda13-pjrt", "jax-cuda12-pjrt")
JIT_NOTE = ("on jax the predict function is always jax.jit-compiled (XLA): Keras' stateless_call traced once "
            "per batch shape; there is no separate jit mode")


def _devices(kind: str) -> list[Any]:
    try:
        return list(jax.devices(kind))
    except RuntimeError:  # no such platform (a CPU-only jaxlib, or no GPU visible)
        return []


@jax.jit
def _normalised(pixels: Any, scale: Any, offset: Any) -> Any:
    return pixels.astype(jnp.float32) * scale + offset


class BackEnd(_Base):
    name = "jax"
    label = "JAX"

    def version(self) -> str:
        return jax.__version__

    def gpus(self) -> list[str]:
        return [d.device_kind for d in _devices("gpu")]

    def device(self, placement: str) -> Any:
        kind, _, index = placement.partition(":")
        return _devices(kind)[int(index or 0)]

    def scope(self, placement: str) -> ContextManager[Any]:
        return jax.default_device(self.device(placement))

    def compile(self, model: Any, placement: str, jit: bool) -> Callable[[Any], Any]:
        device = self.device(placement)
        trainable = [jax.device_put(v.value, device) for v in model.trainable_variables]
        non_trainable = [jax.device_put(v.value, device) for v in model.non_trainable_variables]

        @jax.jit
        def infer(trainable: Any, non_trainable: Any, x: Any) -> Any:
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return out.astype(jnp.float32)  # bf16 logits under mixed_bfloat16

        return lambda x: infer(trainable, non_trainable, x)

    def predict(self, loaded: Any, batch: np.ndarray) -> np.ndarray:
        x = jax.device_put(np.asarray(batch, np.float32), self.device(loaded.placement))
        return np.asarray(loaded.fn(x))

    def predict_pixels(self, loaded: Any, pixels: np.ndarray, norm: Any) -> np.ndarray:
        device = self.device(loaded.placement)
        x = jax.device_put(np.asarray(pixels, np.uint8), device)
        if not norm.identity_order:
            x = x[..., np.asarray(norm.order)]
        scale = jax.device_put(np.asarray(norm.scale, np.float32), device)
        offset = jax.device_put(np.asarray(norm.offset, np.float32), device)
        return np.asarray(loaded.fn(_normalised(x, scale, offset)))

    def set_precision(self, precision: str) -> dict[str, Any]:
        """fp32: matmuls and convolutions in full float32 (``jax_default_matmul_precision`` float32; JAX's
        default lets an Ampere+ GPU use TF32); tf32 and bf16: tensorfloat32."""
        value = "float32" if precision == "fp32" else "tensorfloat32"
        jax.config.update("jax_default_matmul_precision", value)
        return {"jax_default_matmul_precision": value}

    def mode_settings(self, mode: str) -> dict[str, Any]:
        return {"jax_jit": True, "note": JIT_NOTE}

    def peak_memory(self) -> int | None:
        """XLA's peak bytes on the first GPU since the process started (JAX cannot reset it; the bench's
        batch sizes grow, so each reads its own peak unless a smaller one came later). None on the CPU."""
        gpus = _devices("gpu")
        stats = gpus[0].memory_stats() if gpus else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def gpu_build(self) -> GpuBuild:
        """The CUDA plugin's build (``cuda_runtime_build_version``, ``cudnn_build_version``, no GPU needed)
        and the architectures of ``ZOOBENCH_GPU_ARCHS`` (images.yaml gpu:, read off the plugin's fatbins);
        no plugin: a CPU-only jaxlib, cuda None."""
        versions = _cuda_versions()
        if versions is None:
            return GpuBuild(None)
        try:
            cuda = _cuda_version(versions.cuda_runtime_build_version())
        except Exception:  # noqa: BLE001 - a plugin that cannot tell: the record says None
            cuda = None
        try:
            cudnn = _cudnn_version(versions.cudnn_build_version())
        except Exception:  # noqa: BLE001
            cudnn = None
        return GpuBuild.from_env(cuda, cudnn)

    def environment(self) -> dict[str, Any]:
        build = self.gpu_build()
        return {
            "jaxlib": _version_of("jaxlib"),
            "jax_plugins": {name: v for name in PLUGINS if (v := _version_of(name))},
            "jax_default_backend": jax.default_backend(),
            "cuda": build.cuda,
            "cudnn": build.cudnn,
            "cuda_build": build.cuda is not None,
            "gpu_build": build.to_dict(),
            "gpus": self.gpus(),
            "modes": ["default"],
            "mode_note": JIT_NOTE,
            "deterministic": {
                "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
                "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
                "seed": SEED,
            },
        }


def _cuda_versions() -> Any:
    try:
        from jax._src.lib import cuda_versions  # the plugin's _versions module, None without one
    except ImportError:
        return None
    return cuda_versions


def _cuda_version(number: int) -> str:
    """CUDART_VERSION (major * 1000 + minor * 10) -> "MAJOR.MINOR"."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _cudnn_version(number: int) -> str:
    """CUDNN_VERSION (cuDNN 9: major * 10000 + minor * 100 + patch) -> "MAJOR.MINOR.PATCH"."""
    return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"


def _version_of(name: str) -> str | None:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return None
