"""``zoobench speed``: parse the options, time the profile's models (:func:`orchestrator.bench.speed.run_speed`),
print one row per model, and exit 1 when a model was not timed."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..bench.speed import SpeedRequest, parse_batch_sizes, run_speed, speed_rows
from ..results.costs import fmt_bytes
from . import options
from .output import console, out


def speed(
    profile: str = options.profile("smoke"),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="batch sizes, comma separated"),
    warmup: int = typer.Option(10, "--warmup", min=0, help="untimed steps per batch size (timm: 10)"),
    iterations: int = typer.Option(40, "--iterations", min=1, help="timed steps per batch size (timm: 40)"),
    precision: Optional[str] = options.Precision,
    mode: str = options.Mode,
    variant: Optional[str] = options.Variant,
    gpus: Optional[str] = typer.Option(None, "--gpus", help="one GPU index (default: the CPU)"),
    results: Optional[Path] = typer.Option(None, "--results", help="results folder (default results/PROFILE); "
                                           "timings go to its speed/ sub-folder"),
    model: Optional[list[str]] = options.Model,
    force: bool = typer.Option(False, "--force", help="time again models already timed with the same request"),
    build: bool = typer.Option(True, "--build/--no-build", help="build missing images first"),
    runtime: str = options.Runtime,
    manifests: Path = options.Manifests,
) -> None:
    """Time the profile's models on synthetic input (compute only, timm-style), one container at a time."""
    request = SpeedRequest(profile=profile, batch_sizes=parse_batch_sizes(batch_sizes), warmup=warmup,
                           iterations=iterations, precision=precision, mode=mode, variant=variant, gpus=gpus,
                           results=results, only=model, force=force, build=build, runtime=runtime,
                           manifests=manifests)
    done = run_speed(request, console)
    rows = speed_rows(done)
    table = Table(title=f"speed ({done.folder})")
    for col in ("image", "model", "mode", "status", "batch-1 p50 ms", "best samples/s @ batch", "peak memory"):
        table.add_column(col)
    for r in rows:
        best = (f"{r['best_samples_per_second']:.1f} @ {r['best_batch_size']}"
                if r["best_samples_per_second"] is not None else "")
        table.add_row(r["image"], r["model"], r["mode"], r["status"],
                      f"{r['batch1_ms']:.2f}" if r["batch1_ms"] is not None else "", best,
                      fmt_bytes(r["peak_memory_bytes"]))
    out.print(table)
    failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
    for r in failed:
        log = f" (log: {r['log']})" if r["log"] else ""
        console.print(f"[red]{r['image']}/{r['model']} {r['status']}: {r['reason']}{log}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
