"""``zoobench data corrupt``: the options of :func:`.corrupt.corrupt_folder` read and checked, a
progress bar (rich, on stderr) while it runs, and its summary.

The option values become a :class:`.corrupt.Request`: ``--corruptions`` names (comma-separated or
repeated; default the 15 benchmark ones, ``--extra`` adds the 4 held-out ones; both lists are
``imagenet-c`` in manifests/datasets.yaml) and ``--severities`` (``1-5``, ``3``, ``1,3,5``). A bad
value is one :class:`~zoobench_contract.dataset.DataError` line (exit 2 through ``zoobench``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from zoobench_contract.dataset import DataError

from ..paths import MANIFEST_DIR
from .corrupt import CorruptReport, Request, corrupt_folder, corruption_lists


def resolve_corruptions(names: Optional[list[str]], extra: bool, manifest_dir: Path = MANIFEST_DIR) -> list[str]:
    """The corruptions asked for (None: the benchmark ones) plus, with ``extra``, the extra ones,
    in the manifest's order, each once."""
    benchmark, extras, _ = corruption_lists(manifest_dir)
    known = benchmark + extras
    asked = [n.strip() for value in names for n in value.split(",") if n.strip()] if names else list(benchmark)
    if not asked:
        raise DataError(f"--corruptions: no name given; pass some of {', '.join(known)}")
    unknown = [n for n in asked if n not in known]
    if unknown:
        raise DataError(f"--corruptions {unknown[0]}: unknown corruption; known: {', '.join(known)}")
    chosen = set(asked) | (set(extras) if extra else set())
    return [n for n in known if n in chosen]


def parse_severities(text: str, n: int = 5) -> list[int]:
    """``1-5``, ``3``, ``1,3,5`` (or ``1-2,5``) as sorted severities, each within 1..n."""
    found: set[int] = set()
    for part in str(text).split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            first, last = 0, -1
        if not 1 <= first <= last <= n:
            raise DataError(f"--severities {text}: {part.strip()!r} is not a severity or a range within 1-{n}; "
                            f"pass e.g. 1-{n}, 3 or 1,3,5")
        found.update(range(first, last + 1))
    return sorted(found)


def summary(report: CorruptReport) -> str:
    """Images written and skipped, corruptions x severities, seconds and images/s (of those written)."""
    rate = report.written / report.seconds if report.seconds > 0 else 0.0
    removed = f", removed {report.removed} stale" if report.removed else ""
    return (f"{report.out}: {report.n_sources} image(s) x {len(report.corruptions)} corruption(s) x "
            f"{len(report.severities)} severities; wrote {report.written}, skipped {report.skipped} unchanged"
            f"{removed} in {report.seconds:.1f} s ({rate:.1f} images/s)")


class _Bar:
    """A rich progress bar fed by ``corrupt_folder``'s ``progress(done, total)``; shown once work starts."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("corrupting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.task: Optional[int] = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("corrupt", total=total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.task is not None:  # stopping a bar never started still prints a blank line
            self.progress.stop()


def corrupt_cmd(
    data: Path = typer.Option(..., "--data", help="source images (any depth; wnid folders for --per-class)"),
    out: Path = typer.Option(..., "--out", help="destination: OUT/<corruption>/<severity>/<relpath>.JPEG"),
    corruptions: Optional[List[str]] = typer.Option(
        None, "--corruptions", help="names, comma-separated or repeated (default: the 15 benchmark ones)"),
    severities: str = typer.Option("1-5", "--severities", help="1-5, 3 or 1,3,5"),
    per_class: Optional[int] = typer.Option(
        None, "--per-class", min=1, help="only the first N images of each class folder (RobustBench's subset: 5)"),
    seed: int = typer.Option(0, "--seed", min=0, help="the same seed gives the same bytes"),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="processes (default: every CPU); the output is the same for any number"),
    extra: bool = typer.Option(False, "--extra", help="add the 4 held-out corruptions (speckle noise, ...)"),
) -> None:
    """Build an ImageNet-C-style set from any folder: 15 corruptions x 5 severities, the published recipe
    (resize 256, centre crop 224, JPEG quality 85), seeded: a re-run gives the same bytes and skips
    what is already there."""
    _, _, n_severities = corruption_lists(MANIFEST_DIR)
    request = Request(tuple(resolve_corruptions(corruptions, extra)), tuple(parse_severities(severities, n_severities)),
                      seed, per_class)
    bar = _Bar(Console(stderr=True))
    try:
        report = corrupt_folder(data, out, request, workers=workers, progress=bar)
    finally:
        bar.close()
    typer.echo(summary(report))
