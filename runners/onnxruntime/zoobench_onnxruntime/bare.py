"""The plainest ONNX Runtime loop a user would write (tests/benchmarks/bench_overhead.py's bare loop):
an ``InferenceSession`` with ONNX Runtime's defaults on the CPU, fed one float batch."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnxruntime as ort


def session(model_path: str, input_name: str) -> Callable[[np.ndarray], Any]:
    """One step: ``sess.run(None, {input_name: batch})``."""
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    return lambda batch: sess.run(None, {input_name: batch})
