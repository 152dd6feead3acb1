"""ONNX Runtime backend: serves the ONNX models ``zoobench convert`` exported (mounted at /converted).

Everything but the session is shared (:class:`zoobench_contract.converted.ConvertedBackend`): the
listing, the record and sha256 checks, the probe, NHWC -> NCHW. Here: the InferenceSession, its
providers (CPU; CUDA in the cuda variant), threads and graph optimisation level (``--mode``).
fp32 only: the exported graph is fp32 and ORT has no autocast (``--precision tf32|bf16`` is refused).
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

from zoobench_contract.backend import DeviceUnavailable, UsageError
from zoobench_contract.converted import Conversion, ConvertedBackend, Loaded, container_cpus
from zoobench_contract.gpubuild import GpuBuild

LEVELS = {  # --mode -> graph optimisation level ("default": ORT's own default, everything)
    "default": "ORT_ENABLE_ALL",
    "opt-disabled": "ORT_DISABLE_ALL",
    "opt-basic": "ORT_ENABLE_BASIC",
    "opt-extended": "ORT_ENABLE_EXTENDED",
}
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
# fp32 on CUDA as the contract means it: no TF32 (ORT's CUDA EP allows it by default), a fixed
# cuDNN algorithm heuristic instead of timing candidates (EXHAUSTIVE may pick differently each run).
CUDA_OPTIONS = {"device_id": "0", "use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}


def cuda_build() -> str | None:
    """The CUDA this onnxruntime was built with (onnxruntime-gpu's build_and_package_info), None for the CPU wheel."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def gpu_names() -> list[str]:
    """The GPUs the CUDA driver shows this container (none without the driver: a CPU run)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        if cuda.cuInit(0) != 0:
            return []
        count = ctypes.c_int()
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return []
        names = []
        for i in range(count.value):
            dev, buf = ctypes.c_int(), ctypes.create_string_buffer(256)
            cuda.cuDeviceGet(ctypes.byref(dev), i)
            cuda.cuDeviceGetName(buf, 256, dev)
            names.append(buf.value.decode(errors="replace"))
        return names
    except OSError:
        return []


class Backend(ConvertedBackend):
    framework = "onnxruntime"

    def __init__(self) -> None:
        self.mode = "default"
        self.threads = container_cpus()
        self._precision: dict[str, Any] = {}
        self._mode: dict[str, Any] = {}

    def framework_version(self) -> str:
        return ort.__version__

    def runtime_environment(self) -> dict[str, Any]:
        cuda = cuda_build()
        return {
            "onnxruntime": ort.__version__,
            "onnxruntime_build": ort.get_build_info(),
            "providers_available": ort.get_available_providers(),
            "cuda": cuda,
            "cudnn": None,
            "gpus": gpu_names() if CUDA_EP in ort.get_available_providers() else [],
            # onnxruntime cannot tell its CUDA architectures: images.yaml gpu: (ZOOBENCH_GPU_ARCHS), read
            # off libonnxruntime_providers_cuda.so with cuobjdump
            "gpu_build": (GpuBuild.from_env(cuda) if cuda else GpuBuild(None)).to_dict(),
            "intra_op_num_threads": self.threads,
            "modes": list(LEVELS),
            "deterministic": {"use_deterministic_compute": True, "intra_op_num_threads": self.threads,
                              "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
                              "cuda": {k: CUDA_OPTIONS[k] for k in ("use_tf32", "cudnn_conv_algo_search")}},
        }

    def resolve_device(self, requested: str) -> str:
        has_ep = CUDA_EP in ort.get_available_providers()
        if requested == "cuda" and not has_ep:
            raise DeviceUnavailable("--device cuda: this is the CPU build of onnxruntime (no CUDAExecutionProvider); "
                                    "use the cuda variant of the image, or --device cpu")
        gpus = gpu_names() if has_ep and requested in ("cuda", "auto") else []
        if requested == "cuda" and not gpus:
            raise DeviceUnavailable("--device cuda: no CUDA GPU is visible in this container (run with --gpus, or use --device cpu)")
        return "cuda:0" if gpus else "cpu"

    def _providers(self, device: str) -> list[Any]:
        return [(CUDA_EP, dict(CUDA_OPTIONS)), CPU_EP] if device.startswith("cuda") else [CPU_EP]

    def configure(self, precision: str, device: str) -> dict[str, Any]:
        if precision != "fp32":
            raise UsageError(f"--precision {precision}: onnxruntime runs the converted fp32 ONNX graph at fp32 only "
                             "(it has no TF32/bf16 autocast); use --precision fp32")
        self._precision = {"providers": [p if isinstance(p, str) else p[0] for p in self._providers(device)],
                           "intra_op_num_threads": self.threads, "inter_op_num_threads": 1,
                           "execution_mode": "ORT_SEQUENTIAL", "use_deterministic_compute": True,
                           "allow_tf32": False}
        return self._precision

    def modes(self) -> list[str]:
        """Graph optimisation levels below ORT's default (ORT_ENABLE_ALL): what the optimiser buys."""
        return [m for m in LEVELS if m != "default"]

    def configure_mode(self, mode: str, device: str) -> dict[str, Any]:
        self.mode = mode
        self._mode = {"graph_optimization_level": LEVELS[mode]}
        return self._mode

    def compile(self, conversion: Conversion, device: str) -> Callable[[np.ndarray], np.ndarray]:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[self.mode])
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.use_deterministic_compute = True
        opts.log_severity_level = 3  # errors only: no provider warnings on stderr
        session = ort.InferenceSession(str(conversion.model_file), sess_options=opts,
                                       providers=self._providers(device))
        if device.startswith("cuda") and session.get_providers()[0] != CUDA_EP:
            raise DeviceUnavailable(f"--device cuda: onnxruntime could not start the CUDAExecutionProvider "
                                    f"(session providers {session.get_providers()}); use --device cpu")
        self._session = session
        inp = conversion.input_name or session.get_inputs()[0].name
        out = conversion.output_name or session.get_outputs()[0].name
        return lambda x: session.run([out], {inp: x})[0]

    def effective_settings(self, loaded: Loaded) -> None:
        """What the session reports (the dicts configure()/configure_mode() returned go to run.json)."""
        session = self._session
        options = session.get_provider_options()
        self._precision.update(providers=session.get_providers(),
                               provider_options={k: {o: options[k][o] for o in sorted(options[k])
                                                     if o in ("device_id", "use_tf32", "cudnn_conv_algo_search")}
                                                 for k in options if k != CPU_EP})
        self._mode.update(graph_optimization_level=str(session.get_session_options().graph_optimization_level)
                          .rsplit(".", 1)[-1])
