"""``zoobench slurm cancel`` and the hidden ``slurm task`` each array task runs on its node
(``python -m orchestrator.cli slurm task PLAN``, written by :func:`orchestrator.engines.slurm.task_script`)."""
from __future__ import annotations

import os
from pathlib import Path

import typer

from ..bench import containers
from ..bench.layout import published_runs
from ..engines import slurm
from ..engines.slurm_task import run_task
from ..errors import BenchError, EngineError
from . import options
from .output import console

slurm_app = typer.Typer(no_args_is_help=True, help="Follow and stop benches submitted with --engine slurm.")


@slurm_app.command("cancel")
def slurm_cancel(results: Path = typer.Argument(..., help="results folder of a bench run with --engine slurm"),
                 runtime: str = options.Runtime) -> None:
    """Cancel the bench's Slurm array and stop its containers; finished models are kept."""
    try:
        client = containers.connect(runtime)
    except EngineError:
        client = None  # a login node: the tasks stop their own containers
    label = str(results.resolve())
    job_id, removed = slurm.cancel(results, lambda: containers.remove_containers(client, label) if client else 0,
                                   console)
    done = len(published_runs(results))
    console.print(f"cancelled Slurm array {job_id}; {removed} container(s) removed on this host, {done} finished "
                  "model(s) kept; run the same `zoobench run` again to finish the rest", highlight=False)


@slurm_app.command("task", hidden=True)
def slurm_task(plan_file: Path = typer.Argument(..., help="the plan.json of a submitted array")) -> None:
    """One array task (run by Slurm on a node): the plan's job number $SLURM_ARRAY_TASK_ID, run as a
    local bench of one model would run it."""
    index_text = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not index_text.isdigit():
        raise BenchError("`zoobench slurm task` runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is not set)")
    outcome = run_task(plan_file, int(index_text), console)
    if outcome.status not in ("ok", "reused", "skipped"):
        raise typer.Exit(1)
