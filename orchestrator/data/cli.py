"""``zoobench data``: prepare ImageNet val, check a folder, write the sample set.

User errors raise :class:`~zoobench_contract.dataset.DataError`; the top-level ``main`` prints
them as one line with exit code 2. ``check`` exits 1 when the folder would break a benchmark;
``prepare`` exits 1, after its summary and one ``error:`` line, when it left val files out or the
result is not the full val set (unless ``--allow-incomplete``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer

data_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Prepare, check and sample validation data.")


def _ticker(label: str, every_s: float = 5.0) -> Callable[..., None]:
    """Progress on stderr at most every ``every_s`` seconds (only for long runs)."""
    last = [time.monotonic()]

    def tick(done: int, total: Optional[int] = None) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            print(f"{label}: {done}" + (f"/{total}" if total else "") + " files", file=sys.stderr, flush=True)

    return tick


@data_app.command("prepare")
def prepare_cmd(
    out: Path = typer.Option(..., "--out", help="destination: OUT/<wnid>/<file> (ImageNet-C: OUT/<corruption>/"
                                                 "<severity>/<wnid>/<file>)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="the set to prepare (manifests/datasets.yaml): "
                                          "imagenet-v2, imagenet-r, imagenet-a, imagenet-sketch, imagenet-c, "
                                          "imagenet-val"),
    sources: Optional[list[Path]] = typer.Option(None, "--from", help="with --dataset: the archive as distributed "
                                                 "(tar, tar.gz, zip) or its extracted folder; repeat it for "
                                                 "ImageNet-C's tars"),
    val_tar: Optional[Path] = typer.Option(None, "--val-tar", help="ILSVRC2012_img_val.tar (read as a stream)"),
    val_dir: Optional[Path] = typer.Option(None, "--val-dir", help="folder holding the val JPEGs"),
    link: bool = typer.Option(False, "--link", help="hard-link instead of copying (folder sources; symlink "
                                                     "across disks)"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete",
                                          help="exit 0 when OUT holds only part of the set (a subset)"),
    manifests: Optional[Path] = typer.Option(None, "--manifests", help="folder of YAML manifests "
                                             "(default: the checkout's manifests/)"),
) -> None:
    """Sort an evaluation set into class folders: ImageNet val (--val-tar/--val-dir, or --dataset
    imagenet-val --from) with the shipped ground truth, or another set from its archive(s) or folder.

    Exit 1 when files of the set were left out (not images, unsafe archive members, symlinks out of a
    source folder) or OUT is not the whole set as known (a truncated archive: --allow-incomplete
    accepts a subset); exit 2 on bad arguments or an unreadable source."""
    from .prepare_sets import prepare_from

    report = prepare_from(out, dataset, list(sources or []), val_tar=val_tar, val_dir=val_dir, link=link,
                          manifests=manifests, progress=_ticker("prepare"))
    typer.echo(report.summary())
    problem = report.problem(allow_incomplete)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)


@data_app.command("check")
def check_cmd(
    folder: Path = typer.Argument(..., help="validation folder (synset sub-folders)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
    workers: int = typer.Option(2, "--workers", min=1, help="decoding threads"),
) -> None:
    """Decode every image and report problems by file. Exit 1 when the folder would break a benchmark."""
    from .check import check

    report = check(folder, workers=workers, progress=_ticker("check"))
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    if not report.ok:
        first = report.errors[0]
        typer.echo(f"error: {len(report.errors)} file(s) in {folder} would break a benchmark (first: "
                   f"{folder / first.path}{': ' + first.detail if first.detail else ''})", err=True)
        raise typer.Exit(1)


@data_app.command("sample")
def sample_cmd(
    out: Path = typer.Option(..., "--out", help="folder for the sample set"),
) -> None:
    """Write the six-photo sample set (from scikit-image and scikit-learn) as synset folders."""
    from .sample import make_sample

    typer.echo(make_sample(out).summary())


from .corrupt_cmd import corrupt_cmd  # noqa: E402 - ``data corrupt`` has a module of its own

data_app.command("corrupt")(corrupt_cmd)
