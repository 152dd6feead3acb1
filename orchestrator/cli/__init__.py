"""``zoobench``: build the framework images, run a model zoo one container per model, rank it.

The CLI only parses options, calls one service function and prints: one module per command group
(run, convert, results, images, weights, cache, k8s, slurm, doctor), the shared options in :mod:`.options`.
``python -m orchestrator.cli`` is the same program (each Slurm array task runs it).
"""
from __future__ import annotations

import signal
from typing import Any

import typer

from zoobench_contract.clitools import run_app
from zoobench_contract.dataset import DataError

from ..errors import ZoobenchError
from .cache import cache_app
from .convert import convert
from .doctor import doctor
from .images import images_app, models_cmd
from .k8s import k8s_app
from .output import console
from .results import compare, rank, report, robustness
from .run import run
from .slurm import slurm_app
from .speed import speed
from .weights import weights_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible cross-framework ImageNet benchmark: one container per model.")
app.command()(run)
app.command()(speed)
app.command()(convert)
app.command()(rank)
app.command()(report)
app.command()(compare)
app.command()(robustness)
app.command("models")(models_cmd)
app.add_typer(images_app, name="images")
app.add_typer(weights_app, name="weights")
app.add_typer(cache_app, name="cache")
app.add_typer(k8s_app, name="k8s")
app.add_typer(slurm_app, name="slurm")
app.command()(doctor)
try:
    from ..data.cli import data_app

    app.add_typer(data_app, name="data", help="Prepare, check and sample validation data.")
except ImportError:  # pragma: no cover - only while the data package is absent
    pass

# Every user error derives from ZoobenchError (orchestrator.errors); DataError is the contract's.
USER_ERRORS: dict[type[BaseException], int] = {ZoobenchError: ZoobenchError.exit_code, DataError: ZoobenchError.exit_code}


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line and exit code 2; Ctrl-C keeps finished work."""
    signal.signal(signal.SIGTERM, interrupt)
    run_app(app, argv, USER_ERRORS, echo=lambda m: console.print(f"[red]{m}", highlight=False, soft_wrap=True),
            interrupted="interrupted; finished models are kept, run the same command again to resume")


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (scancel, a time limit, docker stop) is handled as Ctrl-C: containers killed, work kept."""
    raise KeyboardInterrupt
