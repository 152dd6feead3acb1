"""Keras on TensorFlow (the ``keras`` image): ``tf.function`` inference graphs, XLA with ``--mode jit``,
op determinism, TF32 off at fp32, the CUDA build from ``tf.sysconfig.get_build_info()``."""
from __future__ import annotations

import os
from typing import Any, Callable, ContextManager

import numpy as np
import tensorflow as tf

from zoobench_contract.gpubuild import GpuBuild

from . import BackEnd as _Base

SEED = 0


class BackEnd(_Base):
    name = "tensorflow"
    label = "TensorFlow"

    def version(self) -> str:
        return tf.__version__

    def setup(self) -> None:
        for gpu in tf.config.list_physical_devices("GPU"):
            try:  # allocate as needed, so an OOM is a real OOM (the orchestrator halves the batch)
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised in this process
        tf.config.experimental.enable_op_determinism()

    def warm_up(self) -> None:
        tf.constant(0.0) + 1.0  # initialise the runtime (and its logging) now, quietly

    def gpus(self) -> list[str]:
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]

    def has_gpu(self) -> bool:
        return bool(tf.config.list_physical_devices("GPU"))

    def placement(self, device: str) -> str:
        return "/GPU:0" if device.startswith("cuda") else "/CPU:0"

    def scope(self, placement: str) -> ContextManager[Any]:
        return tf.device(placement)

    def compile(self, model: Any, placement: str, jit: bool) -> Callable[[Any], Any]:
        """One traced inference graph per model, for any batch size; ``jit``: XLA-compiled (``--mode jit``)."""
        h, w = model.input_shape[1:3]
        spec = tf.TensorSpec([None, h, w, 3], tf.float32)
        return tf.function(lambda x: model(x, training=False), input_signature=[spec], jit_compile=jit,
                           autograph=False)

    def predict(self, loaded: Any, batch: np.ndarray) -> np.ndarray:
        with tf.device(loaded.placement):
            out = loaded.fn(tf.convert_to_tensor(batch, tf.float32))
        return np.asarray(tf.cast(out, tf.float32))

    def predict_pixels(self, loaded: Any, pixels: np.ndarray, norm: Any) -> np.ndarray:
        with tf.device(loaded.placement):
            x = tf.cast(tf.convert_to_tensor(pixels, tf.uint8), tf.float32)
            if not norm.identity_order:
                x = tf.gather(x, list(norm.order), axis=-1)
            x = x * tf.constant(norm.scale, tf.float32) + tf.constant(norm.offset, tf.float32)
            out = loaded.fn(x)
        return np.asarray(tf.cast(out, tf.float32))

    def set_precision(self, precision: str) -> dict[str, Any]:
        """fp32: TF32 off (TensorFlow enables it by default on Ampere+); tf32 and bf16: on."""
        tf.config.experimental.enable_tensor_float_32_execution(precision != "fp32")
        return {"tensor_float_32": precision != "fp32"}

    def modes(self) -> list[str]:
        """``jit``: the compiled predict function is XLA-compiled (``tf.function(jit_compile=True)``,
        one compilation per batch shape); default: a traced graph without XLA."""
        return ["jit"]

    def mode_settings(self, mode: str) -> dict[str, Any]:
        return {"jit_compile": mode == "jit", "tf_function": True}

    def peak_memory(self) -> int | None:
        """TensorFlow's peak bytes on GPU:0 since :meth:`reset_peak_memory` (None without a GPU)."""
        if not self.has_gpu():
            return None
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])

    def reset_peak_memory(self) -> None:
        if self.has_gpu():
            tf.config.experimental.reset_memory_stats("GPU:0")

    def gpu_build(self) -> GpuBuild:
        return gpu_build(tf.sysconfig.get_build_info())

    def environment(self) -> dict[str, Any]:
        build = tf.sysconfig.get_build_info()
        return {
            "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"),
            "cuda_build": bool(build.get("is_cuda_build")),
            "gpu_build": gpu_build(build).to_dict(),
            "gpus": self.gpus(),
            "modes": ["default", *self.modes()],
            "tf_threads": {
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            },
            "deterministic": {
                "enable_op_determinism": _op_determinism_enabled(),
                "TF_DETERMINISTIC_OPS": os.environ.get("TF_DETERMINISTIC_OPS"),
                "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "seed": SEED,
            },
        }


def gpu_build(build: dict[str, Any]) -> GpuBuild:
    """TensorFlow's CUDA build from ``tf.sysconfig.get_build_info()`` (no GPU needed): cuda_version,
    cudnn_version, cuda_compute_capabilities (``sm_80``... kernels, ``compute_90`` PTX). A CPU-only
    TensorFlow (tensorflow-cpu) has none of them: cuda None."""
    cuda = build.get("cuda_version") if build.get("is_cuda_build") else None
    if not cuda:
        return GpuBuild(None)
    cudnn = build.get("cudnn_version")
    return GpuBuild.from_arch_list(str(cuda), str(cudnn) if cudnn else None,
                                   build.get("cuda_compute_capabilities") or [])


def _op_determinism_enabled() -> bool | None:
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return None
