"""Run a Typer app so that every failure is one ``error:`` line and an exit code, never a traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn

import typer


def die(message: str, code: int, echo: Callable[[str], None] | None = None) -> NoReturn:
    (echo or (lambda m: print(m, file=sys.stderr)))(f"error: {message}")
    sys.exit(code)


def run_app(
    app: typer.Typer,
    argv: list[str] | None,
    errors: dict[type[BaseException], int],
    classify: Callable[[BaseException], tuple[str, int] | None] = lambda exc: None,
    echo: Callable[[str], None] | None = None,
    interrupted: str = "interrupted",
) -> None:
    """``errors`` maps exception types to exit codes (their message is the line); ``classify`` may
    turn any other exception into (message, code). Set ZOOBENCH_DEBUG=1 to see tracebacks."""
    try:
        code: Any = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the contract promises no tracebacks
        for kind, exit_code in errors.items():
            if isinstance(exc, kind):
                die(str(exc), exit_code, echo)
        if isinstance(exc, (KeyboardInterrupt, typer.Abort)):
            die(interrupted, 130, echo)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors: one line too
            ctx = getattr(exc, "ctx", None)
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            die(f"{exc.format_message().rstrip('.')}{where}", exc.exit_code, echo)
        classified = classify(exc)
        if classified:
            die(*classified, echo=echo)
        if os.environ.get("ZOOBENCH_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        die(f"{type(exc).__name__}: {first} (set ZOOBENCH_DEBUG=1 for the traceback)", 1, echo)
    if code == 130:
        die(interrupted, 130, echo)
    if isinstance(code, int) and code:
        sys.exit(code)
