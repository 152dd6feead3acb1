"""What a run costs, beside its accuracy: parameters and multiply-adds from run.json's ``model_facts``,
and speed from the results folder's ``speed/<image>-<model>/bench.json`` files (``zoobench bench``).

A run's speed is the bench.json of the same framework, model, precision and mode (read from both files;
speed does not depend on the evaluation set); among several, the one of the run's device, else the first
by folder name. Everything here is lenient: a missing or malformed field is ``None`` ("unknown").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEED_DIR = "speed"
BENCH_FILE = "bench.json"
DEFAULT_MODE = "default"


@dataclass(frozen=True)
class Speed:
    """One bench.json, reduced to what the ranking shows."""

    path: Path
    framework: str
    model: str
    precision: str
    mode: str
    device: str
    latency_ms: float | None  # batch 1, p50 step time
    best_ips: float | None
    best_batch: int | None
    peak_memory_bytes: int | None  # at the best batch size


def run_precision(run: dict[str, Any]) -> str:
    """The precision a run was made at (runs that predate ``--precision`` were fp32)."""
    return str(run.get("precision") or "fp32")


def run_mode(run: dict[str, Any]) -> str:
    """The execution mode of a run (``default`` when run.json has none)."""
    return str(run.get("mode") or DEFAULT_MODE)


def precision_label(run: dict[str, Any]) -> str:
    """``fp32``, or ``fp32 mode compile`` for a run of another mode: what runs ranked together share."""
    mode = run_mode(run)
    return run_precision(run) + ("" if mode == DEFAULT_MODE else f" mode {mode}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        else None


def params_m(run: dict[str, Any]) -> float | None:
    """Total parameters in millions, from ``model_facts.params.total``."""
    facts = run.get("model_facts")
    params = facts.get("params") if isinstance(facts, dict) else None
    total = _number(params.get("total")) if isinstance(params, dict) else None
    return None if total is None else total / 1e6


def gmacs(run: dict[str, Any]) -> float | None:
    """Multiply-adds of one image in billions, from ``model_facts.macs.value``."""
    facts = run.get("model_facts")
    macs = facts.get("macs") if isinstance(facts, dict) else None
    value = _number(macs.get("value")) if isinstance(macs, dict) else None
    return None if value is None else value / 1e9


def _latency(bench: dict[str, Any], results: list[Any]) -> float | None:
    one = next((r for r in results if isinstance(r, dict) and r.get("batch_size") == 1), None)
    if one is not None and isinstance(one.get("step_ms"), dict):
        p50 = _number(one["step_ms"].get("p50"))
        if p50 is not None:
            return p50
    b1 = bench.get("batch1_ms")
    return _number(b1.get("p50")) if isinstance(b1, dict) else _number(b1)


def _speed(path: Path) -> Speed | None:
    try:
        bench = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(bench, dict) or not bench.get("framework") or not bench.get("model"):
        return None
    results = bench.get("results") if isinstance(bench.get("results"), list) else []
    best = bench.get("best") if isinstance(bench.get("best"), dict) else {}
    batch = best.get("batch_size") if isinstance(best.get("batch_size"), int) else None
    at_best = next((r for r in results if isinstance(r, dict) and batch is not None and r.get("batch_size") == batch),
                   {})
    memory = _number(at_best.get("peak_memory_bytes"))
    return Speed(path=path, framework=str(bench["framework"]), model=str(bench["model"]),
                 precision=run_precision(bench), mode=run_mode(bench), device=str(bench.get("device") or ""),
                 latency_ms=_latency(bench, results), best_ips=_number(best.get("samples_per_second")),
                 best_batch=batch, peak_memory_bytes=None if memory is None else int(memory))


def read_speeds(results_dir: Path) -> list[Speed]:
    """Every readable bench.json in ``results_dir/speed/*/`` (and one folder level down), by path."""
    found = sorted(set(Path(results_dir).glob(f"{SPEED_DIR}/*/{BENCH_FILE}"))
                   | set(Path(results_dir).glob(f"*/{SPEED_DIR}/*/{BENCH_FILE}")))
    return [s for s in map(_speed, found) if s is not None]


def speed_of(run: dict[str, Any], speeds: list[Speed]) -> Speed | None:
    """The bench.json of ``run``'s framework, model, precision and mode (its device's first)."""
    key = (str(run.get("framework")), str(run.get("model")), run_precision(run), run_mode(run))
    mine = [s for s in speeds if (s.framework, s.model, s.precision, s.mode) == key]
    device = str(run.get("device") or "")
    return next((s for s in mine if s.device == device), mine[0] if mine else None)


def preprocessing_of(run: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
    """(crop size, resize size, interpolation) from run.json's ``preprocessing``; None when unknown."""
    prep = run.get("preprocessing") if isinstance(run.get("preprocessing"), dict) else {}
    crop, resize = prep.get("crop_size"), prep.get("resize_size")
    interp = prep.get("interpolation")
    return (crop if isinstance(crop, int) else None, resize if isinstance(resize, int) else None,
            str(interp) if interp else None)


def fmt_bytes(n: int | None) -> str:
    """``1.23 GiB`` / ``456 MiB``; "" when unknown."""
    if n is None:
        return ""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
