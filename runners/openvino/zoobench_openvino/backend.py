"""OpenVINO backend: serves the ONNX models ``zoobench convert`` exported (mounted at /converted), on the CPU.

Everything but the compiled model is shared (:class:`zoobench_contract.converted.ConvertedBackend`):
the listing, the record and sha256 checks, the probe, NHWC -> NCHW. Here: ``Core.compile_model`` on
the CPU plugin with INFERENCE_PRECISION_HINT (fp32: f32, which OpenVINO would otherwise lower to bf16
on a CPU that has it; bf16: bf16) and PERFORMANCE_HINT (LATENCY; ``--mode throughput``: THROUGHPUT,
the batch split over the plugin's streams). OpenVINO's GPU plugin drives Intel GPUs only: no CUDA.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Callable

import numpy as np
import openvino as ov

from zoobench_contract.backend import DeviceUnavailable, UsageError
from zoobench_contract.converted import Conversion, ConvertedBackend, Loaded
from zoobench_contract.gpubuild import GpuBuild

DEVICE = "CPU"
PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}
PERFORMANCE = {"default": "LATENCY", "throughput": "THROUGHPUT"}
REPORTED = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "EXECUTION_MODE_HINT", "ENABLE_HYPER_THREADING", "ENABLE_CPU_PINNING")


def text(value: Any) -> Any:
    """An OpenVINO property value as JSON (ov.Type f32 -> "f32", enums -> their name)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, ov.Type):
        return value.get_type_name()
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value)


class Backend(ConvertedBackend):
    framework = "openvino"

    def __init__(self) -> None:
        self.core = ov.Core()
        self.precision = "fp32"
        self.mode = "default"
        self._precision: dict[str, Any] = {}
        self._mode: dict[str, Any] = {}

    def framework_version(self) -> str:
        return version("openvino")

    def capabilities(self) -> list[str]:
        return [str(c) for c in self.core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]

    def runtime_environment(self) -> dict[str, Any]:
        return {
            "openvino": ov.get_version(),
            "devices": list(self.core.available_devices),
            "cpu": self.core.get_property(DEVICE, "FULL_DEVICE_NAME"),
            "optimization_capabilities": self.capabilities(),
            "cuda": None,
            "cudnn": None,
            "gpus": [],
            "gpu_build": GpuBuild(None).to_dict(),  # CPU only: OpenVINO has no CUDA
            "modes": ["default", "throughput"],
            "deterministic": {"device": DEVICE, "INFERENCE_PRECISION_HINT": "f32 at fp32 (explicit: the CPU "
                              "plugin lowers to bf16 where the CPU has it)", "PERFORMANCE_HINT": "LATENCY"},
        }

    def resolve_device(self, requested: str) -> str:
        if requested == "cuda":
            raise DeviceUnavailable("--device cuda: OpenVINO's GPU plugin drives Intel GPUs only; this image runs "
                                    "on the CPU (--device cpu)")
        return "cpu"

    def configure(self, precision: str, device: str) -> dict[str, Any]:
        if precision not in PRECISION_HINT:
            raise UsageError(f"--precision {precision}: OpenVINO runs fp32 or bf16 (INFERENCE_PRECISION_HINT); "
                             "use --precision fp32 or bf16")
        if precision == "bf16" and "BF16" not in self.capabilities():
            raise UsageError(f"--precision bf16: this CPU has no bfloat16 support (OpenVINO CPU "
                             f"OPTIMIZATION_CAPABILITIES: {', '.join(self.capabilities())}); use --precision fp32")
        self.precision = precision
        self._precision = {"INFERENCE_PRECISION_HINT": PRECISION_HINT[precision]}
        return self._precision

    def modes(self) -> list[str]:
        """``throughput``: PERFORMANCE_HINT THROUGHPUT (several CPU streams, each batch split over them)."""
        return ["throughput"]

    def configure_mode(self, mode: str, device: str) -> dict[str, Any]:
        self.mode = mode
        self._mode = {"PERFORMANCE_HINT": PERFORMANCE[mode]}
        return self._mode

    def compile(self, conversion: Conversion, device: str) -> Callable[[np.ndarray], np.ndarray]:
        model = self.core.read_model(str(conversion.model_file))
        compiled = self.core.compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": PRECISION_HINT[self.precision],
                                                           "PERFORMANCE_HINT": PERFORMANCE[self.mode]})
        self._compiled = compiled
        inp = compiled.input(conversion.input_name) if conversion.input_name else compiled.input(0)
        out = compiled.output(conversion.output_name) if conversion.output_name else compiled.output(0)
        if self.mode == "throughput":
            return self._throughput(compiled, inp, out)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({inp: x})
            return request.get_tensor(out).data.copy()

        return run

    @staticmethod
    def _throughput(compiled: Any, inp: Any, out: Any) -> Callable[[np.ndarray], np.ndarray]:
        """One batch split over the plugin's streams (an AsyncInferQueue of its optimal request count)."""
        jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue = ov.AsyncInferQueue(compiled, jobs)
        parts: dict[int, np.ndarray] = {}
        queue.set_callback(lambda request, i: parts.__setitem__(i, request.get_tensor(out).data.copy()))

        def run(x: np.ndarray) -> np.ndarray:
            parts.clear()
            chunks = np.array_split(x, min(jobs, len(x)))
            for i, chunk in enumerate(chunks):
                queue.start_async({inp: np.ascontiguousarray(chunk)}, userdata=i)
            queue.wait_all()
            return np.concatenate([parts[i] for i in range(len(chunks))])

        return run

    def effective_settings(self, loaded: Loaded) -> None:
        """The compiled model's own properties (the dicts configure()/configure_mode() returned go to run.json)."""
        got = {}
        for key in REPORTED:
            try:
                got[key] = text(self._compiled.get_property(key))
            except RuntimeError:  # a property this plugin version does not report
                continue
        self._precision.update({k: got[k] for k in ("INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT") if k in got})
        self._mode.update({k: v for k, v in got.items() if k not in ("INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT")})
