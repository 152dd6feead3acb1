"""Score finished runs (predictions.npz + run.json) against ground truth and rank them; ``run_rank`` prints
the ranking in one of the formats of :mod:`.tables`.

Runs are grouped by the evaluation set their run.json names (:mod:`.evalsets`: set and generated or
not, never their folder) and each group is ranked on its own: one table per set, the default set (val)
first; runs of different sets are never ranked together. Within a group every run must have the same
images, the same class restriction and (unless ``mixed_precision``) the same precision and execution
mode. Each scored run also gets its calibration, model facts and speed (:mod:`.scoring`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from zoobench_contract.outputs import PREDICTIONS_FILE, RUN_FILE

from ..errors import RankError
from .evalsets import corruption_counts, corruption_parts, describe, eval_set_of, manifest, matches, set_order
from .labels import Labels, truth_for
from .columns import format_timm, parse_columns
from .costs import precision_label, read_speeds, run_mode, run_precision
from .runfiles import ERRORS, find_runs, read_predictions, read_run_json, run_field, run_name
from .provenance import platform_note
from .records import ALPHA, EvalSet, ModelResult, RankRow
from .scoring import with_costs
from .stats import competition_rank, mcnemar_paired, wilson
from .tables import FORMATS, format_csv, format_json, format_markdown, format_table, split_groups
from .truth import Truth

@dataclass
class _Run:
    """A finished run, read and not yet scored."""

    name: str
    run_dir: Path
    run: dict[str, Any]
    topk: np.ndarray = field(repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)


@dataclass
class _Group:
    """The runs of one evaluation set; ``reference`` is its first run's (name, digest, paths)."""

    eval_set: EvalSet
    reference: tuple[str, str, np.ndarray]
    runs: list[_Run] = field(default_factory=list)


def _same_images(first: tuple[str, str, np.ndarray], other: tuple[str, str, np.ndarray], of: str = "") -> None:
    (name_a, digest_a, paths_a), (name_b, digest_b, paths_b) = first, other
    why = ""
    if digest_a != digest_b:
        why = f"data digest {digest_a[:19]}... vs {digest_b[:19]}..."
    elif paths_a.shape != paths_b.shape:
        why = f"{paths_a.shape[0]} vs {paths_b.shape[0]} images"
    elif not np.array_equal(paths_a, paths_b):
        why = "different image path lists"
    if why:
        raise RankError(f"runs {name_a!r} and {name_b!r}{of} were evaluated on different image sets ({why}); "
                        "rank them in separate results folders or re-run one on the same data")


def _of(s: EvalSet) -> str:
    """`` (both imagenet-r)`` for a message about two runs of a set other than the default."""
    return "" if s.default and not s.generated else f" (both {s.label})"


def _same_precision(group: _Group) -> None:
    found: dict[str, list[str]] = {}
    for r in group.runs:
        found.setdefault(precision_label(r.run), []).append(r.name)
    if len(found) > 1:
        listed = "; ".join(f"{p}: {len(names)} run(s), e.g. {names[0]!r}" for p, names in sorted(found.items()))
        of = "" if group.eval_set.default and not group.eval_set.generated else f" of {group.eval_set.label}"
        what = "precisions" if len({run_mode(r.run) for r in group.runs}) == 1 else "precisions or modes"
        raise RankError(f"runs{of} of different {what} ({listed}); rank them in separate results folders "
                        "or pass --mixed-precision")


def classes_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """run.json's ``classes``: the subset the logits were restricted to before the top-k, or None."""
    classes = run.get("classes")
    return classes if isinstance(classes, dict) and classes else None


def _classes_text(classes: dict[str, Any] | None) -> str:
    return "all 1000 classes" if classes is None else f"{classes.get('name', '?')}, {classes.get('n', '?')} classes"


def _same_classes(group: _Group) -> None:
    first = group.runs[0]
    for r in group.runs[1:]:
        a, b = classes_of(first.run), classes_of(r.run)
        if (a or {}).get("sha256") != (b or {}).get("sha256"):
            raise RankError(f"runs {first.name!r} and {r.name!r}{_of(group.eval_set)} were scored on different "
                            f"class subsets ({_classes_text(a)} vs {_classes_text(b)}); re-run one with the "
                            "other's --classes")


def _finished(results_dir: Path, run_dir: Path, notes: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(name, run.json) of a finished run; None (and a note) for one that did not finish."""
    name = run_name(results_dir, run_dir)
    run_path, pred_path = run_dir / RUN_FILE, run_dir / PREDICTIONS_FILE
    if not run_path.is_file():
        notes.append(f"{name}: predictions.npz without run.json; not ranked (re-run it)")
        return None
    run = read_run_json(run_path)
    status = run.get("status")
    if status != "ok":
        reason = run.get("reason") or run.get("error") or ""
        notes.append(f"{name}: status {status!r}{': ' + str(reason) if reason else ''}; not ranked")
        return None
    if not pred_path.is_file():
        raise RankError(f"{pred_path} is missing although run.json says ok; re-run this model with --force")
    return name, run


def _add(groups: dict[tuple[str, bool], _Group], name: str, run_dir: Path, run: dict[str, Any],
         eval_set: EvalSet) -> None:
    """Read a run's predictions into its set's group (checking it has the group's images)."""
    run_path = run_dir / RUN_FILE
    paths, topk, scores = read_predictions(run_dir / PREDICTIONS_FILE)
    if isinstance(run.get("n_images"), int) and run["n_images"] != paths.shape[0]:
        raise RankError(f"{run_path}: n_images {run['n_images']} but predictions.npz holds {paths.shape[0]} "
                        "rows; re-run this model")
    this = (name, str(run_field(run, "data.digest", run_path)), paths)
    group = groups.get(eval_set.key)
    if group is None:
        group = groups[eval_set.key] = _Group(eval_set, this)
    else:
        _same_images(group.reference, this, _of(eval_set))
    group.runs.append(_Run(name, run_dir, run, topk, scores))


def _read_groups(results_dir: Path, dataset: str | None, datasets: Any,
                 notes: list[str]) -> list[_Group]:
    """The finished runs below ``results_dir`` by evaluation set, in set order (only ``dataset``'s when given)."""
    groups: dict[tuple[str, bool], _Group] = {}
    held: dict[EvalSet, int] = {}
    for run_dir in find_runs(results_dir):
        finished = _finished(results_dir, run_dir, notes)
        if finished is None:
            continue
        name, run = finished
        eval_set = eval_set_of(run, datasets)
        held[eval_set] = held.get(eval_set, 0) + 1
        if dataset is None or matches(eval_set, dataset):
            _add(groups, name, run_dir, run, eval_set)
    if not groups and held:
        held = dict(sorted(held.items(), key=lambda kv: set_order(kv[0], datasets)))
        raise RankError(f"no runs of dataset {dataset!r} in {results_dir} (it holds {describe(held)}); "
                        "pass one of those to --dataset or run `zoobench run --dataset " f"{dataset}` first")
    if not groups:
        extra = f" ({len(notes)} run(s) did not finish; first: {notes[0]})" if notes else ""
        raise RankError(f"no finished runs in {results_dir}; run `zoobench run` first{extra}")
    return sorted(groups.values(), key=lambda g: set_order(g.eval_set, datasets))


def _group_notes(group: _Group) -> list[str]:
    """Notes on a group: a set the manifest does not know, runs of a class-subset set scored on 1000 classes."""
    s, notes = group.eval_set, []
    if not s.known:
        notes.append(f"dataset {s.name!r} (e.g. run {group.runs[0].name!r}) is not in manifests/datasets.yaml; "
                     "ranked on its own, labels from its class folders")
    unrestricted = [r.name for r in group.runs if s.class_subset and classes_of(r.run) is None]
    if unrestricted:
        notes.append(f"{len(unrestricted)} {s.label} run(s) (e.g. {unrestricted[0]!r}) were not restricted to "
                     f"the set's classes ({s.class_subset}): their Acc@1 is over 1000 classes, not comparable "
                     f"with published {s.heading} numbers; re-run with --dataset {s.name}")
    return notes


def load_results(results_dir: Path, labels: Labels = None, mixed_precision: bool = False, *,
                 dataset: str | None = None, manifests: Path | None = None) -> tuple[list[ModelResult], list[str]]:
    """Score every finished run below ``results_dir`` (only those of set ``dataset`` when given; see
    :func:`.evalsets.matches`); returns (results, in set order; notes on runs not ranked and on the sets).
    ``labels``: a labels CSV, ``"real"`` (ReaL labels) or None (class folders); it scores the runs of
    ``dataset``, else those of the default set: every other set is scored by its class folders.
    Runs of one set at different precisions or modes are refused unless ``mixed_precision``."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RankError(f"results folder {results_dir} does not exist; "
                        "run `zoobench run` first or pass the right folder")
    datasets = manifest(manifests)
    notes: list[str] = []
    groups = _read_groups(results_dir, dataset, datasets, notes)
    labelled = dataset or datasets.default
    speeds = read_speeds(results_dir)
    results: list[ModelResult] = []
    for group in groups:
        if not mixed_precision:
            _same_precision(group)
        _same_classes(group)
        notes += _group_notes(group)
        own = labels if matches(group.eval_set, labelled) else None
        paths = group.reference[2].tolist()
        truth = truth_for(paths, own, group.eval_set.layout)
        parts = corruption_parts(paths, group.reference[0]) if group.eval_set.scoring == "corruption" else None
        del paths
        results += [with_costs(_score(r, group.eval_set, truth, parts), r.run, speeds, r.scores, truth)
                    for r in group.runs]
    if labels is not None and any(not matches(g.eval_set, labelled) for g in groups):
        notes.append(f"--labels scores the {labelled} runs only; the other sets are scored by their class folders")
    return results, notes


def _score(r: _Run, eval_set: EvalSet, truth: Truth,
           parts: tuple[list[tuple[str, int]], np.ndarray] | None) -> ModelResult:
    where, run = r.run_dir / RUN_FILE, r.run
    correct1, correct5 = truth.correct(r.topk)
    n = truth.n
    k1, k5 = int(correct1.sum()), int(correct5.sum())
    weights = run_field(run, "weights", where)
    ips = run.get("images_per_second")
    classes = classes_of(run)
    return ModelResult(
        run=r.name, run_dir=r.run_dir,
        framework=str(run_field(run, "framework", where)), framework_version=str(run.get("framework_version") or ""),
        model=str(run_field(run, "model", where)),
        weights=str(weights.get("kind", "?") if isinstance(weights, dict) else weights),
        n=n, acc1=k1 / n if n else 0.0, acc5=k5 / n if n else 0.0, ci1=wilson(k1, n), ci5=wilson(k5, n),
        images_per_second=float(ips) if isinstance(ips, (int, float)) and ips > 0 else None,
        data_digest=str(run_field(run, "data.digest", where)), device=str(run.get("device") or ""),
        batch_size=run.get("batch_size"), precision=run_precision(run), correct1=correct1, correct5=correct5,
        labels=truth.kind, n_images=truth.n_images, eval_set=eval_set,
        classes=None if classes is None else _classes_text(classes),
        by_corruption={} if parts is None else corruption_counts(parts, truth.keep, correct1),
        platform_note=platform_note(run),
    )


# ---------------------------------------------------------------- ranking

def _rank_group(results: list[ModelResult]) -> list[RankRow]:
    ordered = sorted(results, key=lambda r: (-int(r.correct1.sum()), -int(r.correct5.sum()),
                                             r.platform, r.model, r.run))
    rank1 = competition_rank([int(r.correct1.sum()) for r in ordered])
    rank5 = competition_rank([int(r.correct5.sum()) for r in ordered])
    rows = []
    for i, r in enumerate(ordered):
        p = mcnemar_paired(r.correct1, ordered[i + 1].correct1) if i + 1 < len(ordered) else None
        rows.append(RankRow(r, rank1[i], rank5[i], p, None if p is None else p < ALPHA))
    return rows


def rank_results(results: list[ModelResult]) -> list[RankRow]:
    """Each evaluation set's rows (in the order its first result comes) by Acc@1 (then Acc@5) descending,
    competition ranks, exact McNemar against the next row of the same set."""
    groups: dict[tuple[str, bool], list[ModelResult]] = {}
    for r in results:
        groups.setdefault(r.eval_set.key, []).append(r)
    return [row for members in groups.values() for row in _rank_group(members)]


rank = rank_results  # the name the issue uses
__all__ = ["ERRORS", "find_runs", "load_results", "rank", "rank_results", "read_predictions", "read_run_json",
           "run_field", "run_name", "run_precision", "run_rank", "classes_of", "print_rows"]


def print_rows(rows: list[RankRow], fmt: str, console: Console, columns: tuple[str, ...] | None = None) -> None:
    """``rows`` as ``fmt`` on ``console``: a table per evaluation set (of ``columns`` when given), or one
    text of every set."""
    if fmt == "table":
        for i, group in enumerate(split_groups(rows)):
            if i:
                console.print()
            console.print(format_table(group, console.width, columns))
    elif fmt != "none":
        formats = {"markdown": format_markdown, "csv": format_csv, "json": format_json, "timm": format_timm}
        text = formats[fmt](rows)
        console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True, emoji=False)


def run_rank(results_dir: Path, labels: Labels, fmt: str, console: Console, mixed_precision: bool = False, *,
             dataset: str | None = None, manifests: Path | None = None, columns: str | None = None) -> list[RankRow]:
    """Load, score and rank RESULTS_DIR; print it as ``fmt`` (table|markdown|csv|json|timm|none) on ``console``;
    returns the rows of every evaluation set (default set first), or of ``dataset`` only.
    ``labels``: a labels CSV, ``"real"`` or None (class folders); ``columns``: ``--columns`` (table only)."""
    if fmt not in FORMATS:
        raise RankError(f"unknown format {fmt!r}; use one of {'|'.join(FORMATS[:-1])}")
    keys = parse_columns(columns)
    results, notes = load_results(Path(results_dir), labels, mixed_precision, dataset=dataset, manifests=manifests)
    rows = rank_results(results)
    print_rows(rows, fmt, console, keys)
    if notes:
        err = Console(stderr=True)
        for note in notes:
            err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return rows
