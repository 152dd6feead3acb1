"""``predict bench``: timm-style timing of a model on synthetic input, the figure people quote as images/s.

Per batch size: ``--warmup`` untimed steps, then ``--iterations`` timed steps, a step being one forward
of one batch of seeded synthetic uint8 crops through the very :class:`~.runtime.Predictor` that
``predict run`` uses (uint8 in, logits out as numpy: every step is synchronised). Compute only: no
decode, no resize, no input pipeline. ``predict run``'s ``images_per_second`` stays the end-to-end one
(decoding included); ``samples_per_second`` here is the compute-only throughput (timm ``benchmark.py``:
10 warm-up, 40 timed steps). Peak memory per batch size: on a GPU the framework's peak allocation
(the backend's optional ``peak_memory()`` / ``reset_peak_memory()``); on the CPU the container's cgroup
``memory.peak`` when readable, else the process's ``ru_maxrss``, the record saying which.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from .outputs import SCHEMA_VERSION, write_json
from .runtime import (DEFAULT_MODE, Predictor, check_device_and_precision, configure_mode, configure_precision, environment, fail,
                      find_model, is_out_of_memory, load_backend)

BENCH_FILE = "bench.json"
CGROUP_PEAK = Path("/sys/fs/cgroup/memory.peak")
SEED = 0


def parse_batch_sizes(text: str) -> list[int]:
    """``1,8,32`` -> [1, 8, 32]: positive, distinct, in the order given."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,8,32")
    if not sizes or any(b < 1 for b in sizes) or len(set(sizes)) != len(sizes):
        fail(f"--batch-sizes {text!r}: give distinct positive integers separated by commas, e.g. 1,8,32")
    return sizes


def percentiles(step_s: list[float]) -> dict[str, float]:
    """Step times (seconds) -> mean, p50, p90, p99, min and max in milliseconds."""
    ms = np.asarray(step_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "min": float(ms.min()), "max": float(ms.max())}


def _cgroup_peak() -> int | None:
    try:
        return int(CGROUP_PEAK.read_text().strip())
    except (OSError, ValueError):
        return None


class MemoryMeter:
    """Peak memory of one batch size: the framework's GPU peak, else the container's, else the process's."""

    def __init__(self, backend: Any, device: str):
        self.backend = backend
        self.gpu = device.startswith("cuda")

    def reset(self) -> None:
        if self.gpu and hasattr(self.backend, "reset_peak_memory"):
            self.backend.reset_peak_memory()

    def read(self) -> dict[str, Any]:
        if self.gpu:
            peak = self.backend.peak_memory() if hasattr(self.backend, "peak_memory") else None
            if peak is None:
                return {"peak_memory_bytes": None, "peak_memory": None,
                        "peak_memory_why": f"the {self.backend.framework} backend reports no GPU peak allocation"}
            return {"peak_memory_bytes": int(peak), "peak_memory": "cuda_max_memory_allocated"}
        peak = _cgroup_peak()
        if peak is not None:
            return {"peak_memory_bytes": peak, "peak_memory": "cgroup memory.peak"}
        return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "peak_memory": "process ru_maxrss"}


def time_batch(predictor: Predictor, pixels: np.ndarray, warmup: int, iterations: int) -> tuple[list[float], np.ndarray]:
    """``warmup`` untimed steps, then ``iterations`` timed ones: (the seconds of each, the last logits)."""
    for _ in range(warmup):
        logits = predictor(pixels)
    steps = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        logits = predictor(pixels)
        steps.append(time.perf_counter() - t0)
    return steps, logits


def bench_one(predictor: Predictor, meter: MemoryMeter, batch: int, crop: int, num_classes: int,
              warmup: int, iterations: int) -> dict[str, Any]:
    """One batch size's entry; out of memory there is recorded as its error and the others go on."""
    pixels = np.random.default_rng(SEED).integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    meter.reset()
    try:
        steps, logits = time_batch(predictor, pixels, warmup, iterations)
    except Exception as exc:  # noqa: BLE001 - only out of memory is a batch size's own outcome
        if not is_out_of_memory(exc):
            raise
        return {"batch_size": batch, "error": "out of memory"}
    if logits.shape != (batch, num_classes):
        fail(f"model returned shape {logits.shape}, expected ({batch}, {num_classes})", 1)
    return {"batch_size": batch, "samples_per_second": batch * iterations / sum(steps),
            "step_ms": percentiles(steps), **meter.read()}


def summary(results: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, float | None]:
    """(the best batch size by samples/s, the p50 ms at batch 1 when measured)."""
    ok = [r for r in results if "samples_per_second" in r]
    best = max(ok, key=lambda r: r["samples_per_second"], default=None)
    one = next((r for r in ok if r["batch_size"] == 1), None)
    return ({"batch_size": best["batch_size"], "samples_per_second": best["samples_per_second"]} if best else None,
            one["step_ms"]["p50"] if one else None)


def bench_cmd(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="batch sizes, comma separated"),
    warmup: int = typer.Option(10, "--warmup", min=0, help="untimed steps per batch size"),
    iterations: int = typer.Option(40, "--iterations", min=1, help="timed steps per batch size"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | tf32 | bf16"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    mode: str = typer.Option(DEFAULT_MODE, "--mode", help="execution mode: default, or one `predict info` lists"),
    weights: str = typer.Option("random", "--weights", help="random | imagenet (speed does not depend on them)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for bench.json (written atomically)"),
) -> None:
    """Time the model on synthetic uint8 input at several batch sizes (compute only; JSON on stdout)."""
    check_device_and_precision(device, precision)
    if weights not in ("random", "imagenet"):
        fail(f"--weights {weights!r}: use random or imagenet")
    sizes = parse_batch_sizes(batch_sizes)
    backend = load_backend()
    spec = find_model(backend, model)
    used_device = backend.resolve_device(device)
    precision_settings = configure_precision(backend, precision, used_device)
    mode_settings = configure_mode(backend, mode, used_device)
    net = backend.load(spec, weights, used_device)
    prep = spec.preprocessing
    predictor = Predictor(backend, net, prep, "device")
    meter = MemoryMeter(backend, used_device)
    results = [bench_one(predictor, meter, b, prep.crop_size, spec.num_classes, warmup, iterations) for b in sizes]
    best, batch1 = summary(results)
    if best is None:
        raise MemoryError(f"{spec.name}: out of memory at every batch size ({batch_sizes})")
    record = {
        "schema_version": SCHEMA_VERSION, "framework": backend.framework,
        "framework_version": backend.framework_version(), "model": spec.name, "weights": weights,
        "precision": precision, "precision_settings": precision_settings, "mode": mode,
        "mode_settings": mode_settings, "device": used_device,
        "input": {"shape": [prep.crop_size, prep.crop_size, 3], "dtype": "uint8", "synthetic": True, "seed": SEED},
        "normalise": predictor.where, "warmup": warmup, "iterations": iterations, "results": results,
        "best": best, "batch1_ms": batch1, "env": environment(backend),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is not None:
        write_json(out / BENCH_FILE, record)
    print(json.dumps(record, indent=2, sort_keys=True))
