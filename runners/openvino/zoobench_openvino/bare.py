"""The plainest OpenVINO loop a user would write (tests/benchmarks/bench_overhead.py's bare loop): the
ONNX file compiled for the CPU with OpenVINO's defaults, one infer request fed one float batch."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import openvino as ov


def session(model_path: str, input_name: str) -> Callable[[np.ndarray], Any]:
    """One step: ``request.infer({input_name: batch})``."""
    request = ov.Core().compile_model(model_path, "CPU").create_infer_request()
    return lambda batch: request.infer({input_name: batch})
