"""``zoobench run``: parse the options, start the bench (:func:`orchestrator.bench.service.run_bench`),
then print the summary, the ranking and the report, and exit 1 when a model did not finish."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..bench.plan import PlanOptions
from ..bench.runner import BenchSummary, summary_rows
from ..bench.service import BenchRequest, BenchRun, run_bench
from ..engines.slurm import SlurmOptions
from ..errors import BenchError, RankError
from . import options
from .output import console, out


def run(
    profile: str = options.profile("sample"),
    data: Optional[list[str]] = options.DataSets,
    dataset: Optional[str] = options.Dataset,
    results: Optional[Path] = typer.Option(None, "--results", help="results folder (default results/PROFILE)"),
    gpus: Optional[str] = typer.Option(None, "--gpus",
                                       help="GPU indices, e.g. 0,1 (--jobs-per-gpu models per GPU at a time)"),
    variant: Optional[str] = options.Variant,
    model: Optional[list[str]] = options.Model,
    batch_size: Optional[int] = options.BatchSize,
    weights: Optional[str] = options.weights(),
    limit: Optional[int] = options.Limit,
    labels: Optional[str] = options.Labels,
    force: bool = typer.Option(False, "--force", help="re-run models that already finished"),
    build: bool = typer.Option(True, "--build/--no-build", help="build missing images first"),
    fmt: str = typer.Option("table", "--format", help="ranking format: table|markdown|csv|json"),
    precision: Optional[str] = options.Precision,
    mode: str = options.Mode,
    mixed_precision: bool = options.Mixed,
    jobs_per_gpu: int = typer.Option(1, "--jobs-per-gpu", min=1, help="models sharing each GPU at a time"),
    pixel_cache: bool = typer.Option(True, "--pixel-cache/--no-pixel-cache",
                                     help="decode each image set once per pixel configuration, shared by the models"),
    engine: str = typer.Option("local", "--engine", help="local (this host) | slurm (one job array, a task per model)"),
    runtime: str = typer.Option("docker", "--runtime", help="container runtime: docker | podman (its Docker API)"),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition", rich_help_panel="Slurm"),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account", rich_help_panel="Slurm"),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Slurm time limit per task, e.g. 2:00:00",
                                             rich_help_panel="Slurm"),
    gres: Optional[str] = typer.Option(None, "--gres", help="Slurm gres per task (default gpu:1 for the cuda "
                                       "variant, none for cpu)", rich_help_panel="Slurm"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="Slurm: at most N tasks at once",
                                               rich_help_panel="Slurm"),
    sbatch_arg: Optional[list[str]] = typer.Option(None, "--sbatch-arg", help="extra sbatch options, e.g. '--qos=high' "
                                                   "(repeatable; split into words as a shell would, never run by one)",
                                                   rich_help_panel="Slurm"),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="a shared folder of `zoobench images export`; "
                                              "this host and every Slurm node load the images they lack from it",
                                              rich_help_panel="Slurm"),
    manifests: Path = options.Manifests,
) -> None:
    """Run a bench profile: one container per model (on this host or as a Slurm array), then print the ranking."""
    from ..results.labels import parse_labels
    from ..results.tables import FORMATS

    # Everything that can be checked is checked before the first container (or build) starts.
    if fmt not in FORMATS:
        raise RankError(f"--format {fmt!r}: use one of {'|'.join(FORMATS[:-1])}")
    parsed = parse_labels(labels)
    if isinstance(parsed, Path) and not parsed.is_file():
        raise BenchError(f"--labels {parsed}: no such file; pass real or a CSV with columns filename,wnid")
    request = BenchRequest(
        profile=profile, data=None, results=results, gpus=gpus, variant=variant,
        plan=PlanOptions(only=model, batch_size=batch_size, weights=weights, limit=limit, precision=precision, mode=mode),
        labels=parsed, force=force, build=build, jobs_per_gpu=jobs_per_gpu, pixel_cache=pixel_cache, engine=engine,
        runtime=runtime, images_dir=images_dir, manifests=manifests,
        slurm=SlurmOptions(partition, account, time_limit, gres, max_parallel, tuple(sbatch_arg or ())),
    )
    done = [run_bench(replace(request, dataset=name, data=folder), console)
            for name, folder in bench_sets(request, dataset, data or [])]
    finish(done, parsed, fmt, mixed_precision, manifests)


def bench_sets(request: BenchRequest, dataset: str | None, data: list[str]) -> list[tuple[str | None, Path | None]]:
    """(set, data folder) of each bench a ``zoobench run`` makes: ``--dataset`` alone, else the profile's
    ``datasets`` (each on its ``--data NAME=DIR``; a set that reads only some val classes may use the
    val folder), else the default set. One line for a set without data or data for no set."""
    from ..data.datasets import load_datasets
    from ..manifests import get_profile

    manifest = load_datasets(request.manifests)
    listed = get_profile(request.profile, request.manifests).datasets
    names = [dataset] if dataset else list(listed or [manifest.default])
    for name in names:
        manifest.get(name, "--dataset" if dataset else f"profile {request.profile} datasets:")
    named = {}
    plain = []
    for item in data:
        key, sep, folder = item.partition("=")
        if sep and key in manifest.datasets:
            named[key] = Path(folder)
        else:
            plain.append(Path(item))
    if len(plain) > 1 or (plain and len(names) > 1):
        raise BenchError(f"--data: {len(plain)} folder(s) for {len(names)} evaluation set(s) ({', '.join(names)}); "
                         "give --data NAME=DIR for each set")
    stray = [k for k in named if k not in names]
    if stray:
        raise BenchError(f"--data {stray[0]}=...: this bench does not run {stray[0]} (it runs {', '.join(names)})")
    if plain:
        named[names[0]] = plain[0]
    val = named.get(manifest.default)
    out: list[tuple[str | None, Path | None]] = []
    for name in names:
        folder = named.get(name) or (val if manifest.datasets[name].subset_images else None)
        if folder is None and len(names) > 1:
            raise BenchError(f"--data {name}=DIR is missing: profile {request.profile} benches {', '.join(names)}; "
                             "give each set its folder")
        out.append((None if name == manifest.default and not dataset else name, folder))
    return out


def finish(done_list: list[BenchRun], labels: Any, fmt: str, mixed_precision: bool, manifests: Path) -> None:
    """The summary of each bench, then the ranking and report of what ran, then every failure in full; exit 1
    when a model did not finish or none ran."""
    from ..results.ranking import run_rank
    from ..results.report import write_reports

    done = done_list[-1]
    summary, results = BenchSummary([o for d in done_list for o in d.summary.outcomes]), done.results
    rows = summary_rows(summary)
    for d in done_list:
        print_summary(summary_rows(d.summary), d.evalset.describe() if d.evalset is not None else None)
    if summary.count("ok") + summary.count("reused"):
        ranked = run_rank(results, labels, fmt, out, mixed_precision=mixed_precision)
        try:
            html = write_reports(ranked, results, results, labels, done.data, manifests)[-1]
            console.print(f"report: {html} (with results.md and acc_vs_speed.png)", highlight=False, soft_wrap=True)
        except Exception as exc:  # noqa: BLE001 - a report that cannot be written never fails a finished bench
            console.print(f"note: no report written ({type(exc).__name__}: {exc}); `zoobench report {results}` "
                          "retries it", highlight=False, soft_wrap=True)
    failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
    for r in failed:  # in full, one line each, after the ranking: the table cuts long reasons
        log = f" (log: {r['log']})" if r["log"] else ""
        console.print(f"[red]{r['image']}/{r['model']} {r['status']}: {r['reason']}{log}", highlight=False, soft_wrap=True)
    if failed:
        console.print(f"[red]error: {len(failed)} of {len(rows)} model(s) did not finish (reasons above); "
                      f"fix them and run the same command again: finished models are kept", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
    if not summary.count("ok") + summary.count("reused"):  # all skipped: nothing was measured
        console.print(f"[red]error: no model ran: all {len(rows)} were skipped (reasons above); fetch their weights "
                      "(`zoobench weights fetch`) or pass --weights random", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def print_summary(rows: list[dict[str, Any]], evalset: str | None = None) -> None:
    """One row per model; the reasons of models that did not run follow, each on one full line."""
    table = Table(title="bench" + (f" on {evalset}" if evalset else ""), show_lines=False)
    for col in ("image", "model", "weights", "status", "batch", "img/s"):
        table.add_column(col)
    colours = {"ok": "green", "reused": "cyan", "skipped": "yellow", "failed": "red", "interrupted": "red"}
    for r in rows:
        ips = f"{r['images_per_second']:.1f}" if r["images_per_second"] else ""
        table.add_row(r["image"], r["model"], r["weights"], f"[{colours[r['status']]}]{r['status']}",
                      str(r["batch_size"] or ""), ips)
    console.print(table)
    for r in rows:
        if r["status"] == "skipped":
            console.print(f"[yellow]{r['image']}/{r['model']} skipped: {r['reason']}", highlight=False, soft_wrap=True)
