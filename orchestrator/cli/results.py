"""``zoobench rank``, ``report``, ``compare`` and ``robustness``: results folders in, rankings and reports out."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import RankError
from ..results.columns import COLUMNS_HELP
from . import options
from .output import out


def rank(
    results_dir: Path = typer.Argument(..., help="folder holding one sub-folder per model run"),
    labels: Optional[str] = options.Labels,
    fmt: str = typer.Option("table", "--format", help="table|markdown|csv|json|timm. csv and json carry every "
                            "column (params, GMACs, latency, ECE, ...; empty/null when unknown); timm: timm's "
                            "results-imagenet.csv header (model, img_size, top1, top1_err, top5, top5_err, "
                            "param_count, crop_pct, interpolation), model = FRAMEWORK/MODEL (.WEIGHTS unless imagenet, "
                            "-PRECISION unless fp32, -MODE unless default), param_count in millions, "
                            "img_size = crop, crop_pct = crop/resize; one evaluation set (--dataset)"),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
    mixed_precision: bool = options.Mixed,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="only this evaluation set's ranking "
                                          "(manifests/datasets.yaml; NAME-generated: a generated set's); "
                                          "default: every set in RESULTS_DIR, one ranking each"),
    manifests: Path = options.Manifests,
) -> None:
    """Score every predictions.npz + run.json below RESULTS_DIR and print the ranking of each evaluation set
    (the set run.json names; runs of different sets are never ranked together). Runs of different precisions
    or execution modes are refused together unless --mixed-precision. Speed columns come from
    RESULTS_DIR/speed/*/bench.json (same framework, model, precision and mode), params/GMACs from run.json's
    model_facts, ECE (15 bins) and over-confidence from the stored top-1 probabilities, NLL/Brier from the
    logits (--save-logits)."""
    from ..results.labels import parse_labels
    from ..results.ranking import run_rank

    run_rank(results_dir, parse_labels(labels), fmt, out, mixed_precision=mixed_precision, dataset=dataset,
             manifests=manifests, columns=columns)


def robustness(
    results_dir: Path = typer.Argument(..., help="folder holding runs of shifted sets and their clean runs"),
    labels: Optional[str] = options.Labels,
    fmt: str = typer.Option("table", "--format", help="table|markdown|csv|json"),
    mixed_precision: bool = options.Mixed,
    manifests: Path = options.Manifests,
) -> None:
    """Each run of a shifted set (ImageNet-V2, -R, -A, -Sketch: Acc@1 drop and rank change; ImageNet-C: error
    per corruption and severity, mCE, relative mCE) against its clean run of the same framework, model,
    weights and precision."""
    from ..results.labels import parse_labels
    from ..results.robusttables import run_robustness

    run_robustness(results_dir, parse_labels(labels), fmt, out, mixed_precision=mixed_precision, manifests=manifests)


def report(
    results_dir: Path = typer.Argument(...),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="default: RESULTS_DIR"),
    labels: Optional[str] = options.Labels,
    mixed_precision: bool = options.Mixed,
    data: Optional[Path] = typer.Option(None, "--data", help="the data folder the runs were made on, for the "
                                        "gallery's thumbnails (default: the folder run.json records, if it is here)"),
    manifests: Path = options.Manifests,
) -> None:
    """Write results.md, a PNG of Acc@1 against images/s per framework, and report.html (one self-contained
    page: sortable ranking of each evaluation set, plot, robustness when there are shifted sets,
    environments, agreement matrices, disagreement gallery)."""
    from ..results.labels import parse_labels
    from ..results.ranking import run_rank
    from ..results.report import write_reports

    parsed = parse_labels(labels)
    rows = run_rank(results_dir, parsed, "none", out, mixed_precision=mixed_precision, manifests=manifests)
    for path in write_reports(rows, results_dir, out_dir or results_dir, parsed, data, manifests):
        out.print(str(path))


def compare(
    folders: list[Path] = typer.Argument(..., help="RUN_A RUN_B (two run folders), or RESULTS with --matrix"),
    matrix: bool = typer.Option(False, "--matrix", help="agreement of the runs of each architecture in RESULTS "
                                "(manifests/architectures.yaml)"),
    labels: Optional[str] = options.Labels,
    fmt: str = typer.Option("table", "--format", help="table|json"),
    manifests: Path = options.Manifests,
) -> None:
    """Compare two runs image by image (agreement, who is right, McNemar, the images they disagree on
    most), or with --matrix the runs of each architecture across frameworks in one results folder."""
    from ..results.compare import run_compare, run_matrix
    from ..results.labels import parse_labels

    if matrix:
        if len(folders) != 1:
            raise RankError(f"--matrix takes one results folder, got {len(folders)}; "
                            "`zoobench compare RESULTS --matrix`")
        from ..results.architectures import ARCHITECTURES_FILE, load_architectures

        run_matrix(folders[0], load_architectures(manifests / ARCHITECTURES_FILE), fmt, out)
    elif len(folders) != 2:
        raise RankError(f"compare takes two run folders, got {len(folders)}; `zoobench compare RUN_A RUN_B` "
                        "or `zoobench compare RESULTS --matrix`")
    else:
        from ..results.fidelity import pair_fidelity

        run_compare(folders[0], folders[1], parse_labels(labels), fmt, out, extra=pair_fidelity)
