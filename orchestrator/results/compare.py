"""Compare the predictions of two runs image by image, and runs of one architecture across frameworks.

Runs are matched by relative image path (the ``paths`` of predictions.npz), so runs of different
subsets or data folders compare on the images they share; two runs made on different data (their
run.json ``data.digest`` differ) get a note saying so. Agreement matrices are per evaluation set
(run.json ``dataset``): runs of one architecture on val and on ImageNet-R are never in one matrix.

*Disagree most*: the shared images whose top-1 classes differ, ordered by the sum of the two
runs' top-1 scores (softmax probabilities), highest first, i.e. where both runs are most sure of
different classes; ties (and runs without scores) by image path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from zoobench_contract.outputs import PREDICTIONS_FILE, RUN_FILE

from ..errors import RankError
from .architectures import ArchitecturesManifest
from .evalsets import set_suffix
from .labels import Labels, truth_for
from .provenance import architecture_key
from .ranking import find_runs, read_predictions, read_run_json, run_field, run_name, run_precision
from .records import ALPHA
from .stats import mcnemar_exact
from .tables import fmt_p

FORMATS = ("table", "json")
N_DISAGREEMENTS = 20


@dataclass
class RunPredictions:
    """One finished run's predictions and identity."""

    name: str
    run_dir: Path
    framework: str
    framework_version: str
    model: str
    precision: str
    paths: np.ndarray = field(repr=False)
    topk: np.ndarray = field(repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)
    data_digest: str | None = None  # run.json's data.digest: which images, byte for byte

    @property
    def label(self) -> str:
        return f"{self.framework} {self.framework_version} {self.model}".replace("  ", " ").strip()


def read_run(run_dir: Path, name: str | None = None) -> dict[str, Any]:
    """run.json of a finished run; RankError (one line) when it is missing or did not finish."""
    run_path = Path(run_dir) / RUN_FILE
    if not run_path.is_file():
        raise RankError(f"{run_dir}: no {RUN_FILE}; pass a run folder (one holding predictions.npz + run.json)")
    run = read_run_json(run_path)
    if run.get("status") != "ok":
        reason = run.get("reason") or run.get("error") or ""
        raise RankError(f"{name or run_dir}: status {run.get('status')!r}{': ' + str(reason) if reason else ''}; "
                        "only finished runs can be compared")
    return run


def load_run(run_dir: Path, name: str | None = None, run: dict[str, Any] | None = None) -> RunPredictions:
    """Read one finished run folder (``run`` is its run.json when already read)."""
    run_dir = Path(run_dir)
    run = run if run is not None else read_run(run_dir, name)
    pred_path = run_dir / PREDICTIONS_FILE
    if not pred_path.is_file():
        raise RankError(f"{pred_path} is missing although run.json says ok; re-run this model with --force")
    paths, topk, scores = read_predictions(pred_path)
    where = run_dir / RUN_FILE
    data = run.get("data")
    digest = data.get("digest") if isinstance(data, dict) else None
    return RunPredictions(name or run_dir.name, run_dir, str(run_field(run, "framework", where)),
                          str(run.get("framework_version") or ""), str(run_field(run, "model", where)),
                          run_precision(run), paths, topk, scores, str(digest) if digest else None)


def one_run(path: Path) -> RunPredictions:
    """The run in folder ``path``: the folder itself, or its only run below it."""
    path = Path(path)
    if not path.is_dir():
        raise RankError(f"run folder {path} does not exist; pass a folder holding predictions.npz + run.json")
    runs = find_runs(path)
    if len(runs) != 1:
        what = f"holds {len(runs)} runs (e.g. {run_name(path, runs[0])!r})" if runs else "holds no run"
        raise RankError(f"{path} {what}; pass one run folder, or `zoobench compare {path} --matrix` "
                        "to compare the runs of each architecture")
    return load_run(runs[0], runs[0].name)


def shared_rows(a: RunPredictions, b: RunPredictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shared paths, sorted; their rows in ``a``; their rows in ``b``)."""
    if a.paths.shape == b.paths.shape and np.array_equal(a.paths, b.paths):
        order = np.argsort(a.paths, kind="stable")
        return a.paths[order], order, order
    common, ia, ib = np.intersect1d(a.paths, b.paths, assume_unique=False, return_indices=True)
    return common, ia, ib


def agreement(top_a: np.ndarray, top_b: np.ndarray) -> tuple[float, float]:
    """(fraction of rows with the same top-1, mean |top5_a & top5_b| / 5) over paired rows."""
    if top_a.shape[0] == 0:
        return float("nan"), float("nan")
    same1 = top_a[:, 0] == top_b[:, 0]
    overlap = (top_a[:, :5, None] == top_b[:, None, :5]).any(axis=2).sum(axis=1)  # top-5 rows hold distinct classes
    return float(same1.mean()), float(overlap.mean() / 5)


@dataclass
class Disagreement:
    path: str
    top1_a: int
    score_a: float | None
    top1_b: int
    score_b: float | None
    truth: list[int]  # accepted classes; [] = not scored (no ReaL label)

    def to_dict(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {"path": self.path, "top1_a": self.top1_a, "top1_a_name": names[self.top1_a], "score_a": self.score_a,
                "top1_b": self.top1_b, "top1_b_name": names[self.top1_b], "score_b": self.score_b,
                "truth": self.truth, "truth_names": [names[c] for c in self.truth]}


@dataclass
class Comparison:
    """Two runs on their shared images. Correctness counts are top-1, over the ``n_scored`` images."""

    a: str
    b: str
    a_label: str
    b_label: str
    labels: str  # "imagenet" or "real"
    n_a: int
    n_b: int
    n_shared: int
    n_scored: int
    top1_agreement: float
    top5_overlap: float
    both_right: int
    only_a: int
    only_b: int
    both_wrong: int
    p_mcnemar: float
    disagreements: list[Disagreement]

    @property
    def acc1_a(self) -> float:
        return (self.both_right + self.only_a) / self.n_scored

    @property
    def acc1_b(self) -> float:
        return (self.both_right + self.only_b) / self.n_scored

    def to_dict(self) -> dict[str, Any]:
        from zoobench_contract.imagenet import class_names

        names = class_names()
        out = {k: v for k, v in self.__dict__.items() if k != "disagreements"}
        out.update(acc1_a=self.acc1_a, acc1_b=self.acc1_b, significant=self.p_mcnemar < ALPHA,
                   disagreements=[d.to_dict(names) for d in self.disagreements])
        return out


def compare_runs(a: RunPredictions, b: RunPredictions, labels: Labels = None,
                 top: int = N_DISAGREEMENTS) -> Comparison:
    """Compare ``a`` and ``b`` on their shared images; ``labels`` as for ranking (CSV, "real", None)."""
    paths, ia, ib = shared_rows(a, b)
    if paths.size == 0:
        raise RankError(f"runs {a.name!r} and {b.name!r} share no image path (e.g. {str(a.paths[0])!r} vs "
                        f"{str(b.paths[0])!r}); compare runs made on the same data folder")
    ta, tb = a.topk[ia], b.topk[ib]
    truth = truth_for(paths.tolist(), labels)
    right_a, _ = truth.correct(ta)
    right_b, _ = truth.correct(tb)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    both_right = int((right_a & right_b).sum())
    top1, top5 = agreement(ta, tb)

    sa = a.scores[ia, 0].astype(np.float64) if a.scores is not None else None
    sb = b.scores[ib, 0].astype(np.float64) if b.scores is not None else None
    differ = np.flatnonzero(ta[:, 0] != tb[:, 0])
    if sa is not None and sb is not None:
        differ = differ[np.argsort(-(sa[differ] + sb[differ]), kind="stable")]  # paths are sorted: ties by path
    kept_row = np.cumsum(truth.keep) - 1
    picked = [Disagreement(str(paths[i]), int(ta[i, 0]), None if sa is None else float(sa[i]), int(tb[i, 0]),
                           None if sb is None else float(sb[i]),
                           truth.classes(int(kept_row[i])) if truth.keep[i] else [])
              for i in differ[:top]]
    return Comparison(a.name, b.name, a.label, b.label, truth.kind, int(a.paths.size), int(b.paths.size),
                      int(paths.size), truth.n, top1, top5, both_right, only_a, only_b,
                      truth.n - both_right - only_a - only_b, mcnemar_exact(only_a, only_b), picked)


# ---------------------------------------------------------------- agreement matrix

@dataclass
class AgreementMatrix:
    """Runs of one architecture (several frameworks) in one results folder, pairwise.

    ``top1[i][j]``: fraction of their shared images where runs i and j have the same top-1;
    ``top5[i][j]``: mean top-5 overlap; ``n_shared[i][j]``: images both ran (diagonal: the run's own).
    """

    architecture: str
    runs: list[str]
    platforms: list[str]  # "pytorch 1.0 resnet50"
    n_shared: list[list[int]]
    top1: list[list[float]]
    top5: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def agreement_matrices(results_dir: Path, architectures: ArchitecturesManifest,
                       only: set[str] | None = None) -> tuple[list[AgreementMatrix], list[str]]:
    """One :class:`AgreementMatrix` per architecture with two or more finished runs below ``results_dir``
    (in the manifest's order; only the runs named in ``only`` when given, e.g. one evaluation set's);
    returns (matrices, notes)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RankError(f"results folder {results_dir} does not exist; run `zoobench run` first or pass the right folder")
    lookup = architectures.lookup()
    members: dict[str, list[tuple[str, Path, dict[str, Any]]]] = {}
    unknown: list[str] = []
    notes: list[str] = []
    for run_dir in find_runs(results_dir):
        name = run_name(results_dir, run_dir)
        if only is not None and name not in only:
            continue
        try:
            run = read_run(run_dir, name)
        except RankError as exc:
            notes.append(str(exc))
            continue
        arch = lookup.get(architecture_key(run))
        if arch is None:
            unknown.append(name)
        else:
            members.setdefault(arch + set_suffix(run), []).append((name, run_dir, run))  # one matrix per set
    if unknown:
        notes.append(f"{len(unknown)} run(s) of no architecture in the manifest (e.g. {unknown[0]!r}); "
                     "add them to manifests/architectures.yaml to compare them")
    single = sorted(a for a, m in members.items() if len(m) == 1)
    if single:
        notes.append(f"{len(single)} architecture(s) with one run only, nothing to compare: {', '.join(single)}")
    matrices = []
    keys = [k for arch in architectures.architectures
            for k in sorted(k for k in members if k == arch or k.startswith(arch + " ["))]
    for arch in keys:
        found = members[arch]
        if len(found) < 2:
            continue
        runs = [load_run(d, name, run) for name, d, run in found]
        k = len(runs)
        n = np.zeros((k, k), dtype=np.int64)
        t1, t5 = np.ones((k, k)), np.ones((k, k))
        for i in range(k):
            n[i, i] = runs[i].paths.size
            for j in range(i + 1, k):
                _, ia, ib = shared_rows(runs[i], runs[j])
                n[i, j] = n[j, i] = ia.size
                t1[i, j], t5[i, j] = t1[j, i], t5[j, i] = agreement(runs[i].topk[ia], runs[j].topk[ib])
        matrices.append(AgreementMatrix(arch, [r.name for r in runs], [r.label for r in runs], n.tolist(),
                                        t1.tolist(), t5.tolist()))
    return matrices, notes


# ---------------------------------------------------------------- output

def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f}"


def _score(s: float | None) -> str:
    return "" if s is None else f" ({s:.3f})"


def comparison_tables(c: Comparison) -> list[Table]:
    """Summary and most-disagreeing images as rich tables."""
    from zoobench_contract.imagenet import class_names

    names = class_names()
    real = c.labels == "real"
    kind = "ReaL labels" if real else "labels"
    summary = Table(title=f"{c.a} vs {c.b}", box=box.SIMPLE_HEAD, show_header=False)
    summary.add_column("what", no_wrap=True)
    summary.add_column("value", overflow="fold")
    for what, value in [
        ("A", c.a_label), ("B", c.b_label),
        ("shared images", f"{c.n_shared} (A ran {c.n_a}, B ran {c.n_b})"),
        ("top-1 agreement", f"{_pct(c.top1_agreement)} %"),
        ("top-5 overlap", f"{_pct(c.top5_overlap)} % (mean |top5 A & top5 B| / 5)"),
        (f"scored ({kind})", f"{c.n_scored}" + (" with a ReaL label" if real else "")),
        ("Acc@1 A / B", f"{_pct(c.acc1_a)} / {_pct(c.acc1_b)} %"),
        ("both right", str(c.both_right)), ("only A right", str(c.only_a)), ("only B right", str(c.only_b)),
        ("both wrong", str(c.both_wrong)),
        ("McNemar p", fmt_p(c.p_mcnemar) + (" *" if c.p_mcnemar < ALPHA else "")),
    ]:
        summary.add_row(what, value)
    worst = Table(title=f"{len(c.disagreements)} images where they disagree most",
                  caption="Top-1 classes differ; ordered by the sum of both top-1 scores.", box=box.SIMPLE_HEAD)
    for col in ("image", "A top-1 (score)", "B top-1 (score)", "ReaL labels" if real else "label"):
        worst.add_column(col, overflow="fold")
    for d in c.disagreements:
        worst.add_row(d.path, names[d.top1_a] + _score(d.score_a), names[d.top1_b] + _score(d.score_b),
                      ", ".join(names[t] for t in d.truth) or "(none)")
    return [summary, worst] if c.disagreements else [summary]


def matrix_tables(matrices: list[AgreementMatrix]) -> list[Table]:
    tables = []
    for m in matrices:
        t = Table(title=f"{m.architecture}: top-1 agreement % (top-5 overlap %)", box=box.SIMPLE_HEAD)
        t.add_column("run", overflow="fold")
        for i in range(len(m.runs)):
            t.add_column(f"[{i + 1}]", justify="right", no_wrap=True)
        for i, run in enumerate(m.runs):
            cells = ["" if i == j else f"{_pct(m.top1[i][j])} ({_pct(m.top5[i][j])})" for j in range(len(m.runs))]
            t.add_row(f"[{i + 1}] {run} ({m.platforms[i]})", *cells)
        tables.append(t)
    return tables


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise RankError(f"unknown format {fmt!r}; use one of {'|'.join(FORMATS)}")


def run_compare(run_a: Path, run_b: Path, labels: Labels, fmt: str, console: Console,
                extra: Callable[[Path, Path, Labels], Any] | None = None) -> Comparison:
    """``zoobench compare RUN_A RUN_B``: compare and print as ``fmt`` (table|json). ``extra(dir_a, dir_b, labels)``
    may add a section (an object with ``key``, ``to_dict()`` and ``table()``, or None): the CLI's conversion
    fidelity (:mod:`.fidelity`) when one run is the other's conversion."""
    _check_format(fmt)
    a, b = one_run(run_a), one_run(run_b)
    c = compare_runs(a, b, labels)
    if a.data_digest and b.data_digest and a.data_digest != b.data_digest:
        Console(stderr=True).print(
            f"note: {a.name} and {b.name} were made on different data (digest {a.data_digest[:19]}... vs "
            f"{b.data_digest[:19]}...); the comparison covers the {c.n_shared} images both predicted",
            markup=False, highlight=False, soft_wrap=True)
    section = extra(a.run_dir, b.run_dir, labels) if extra is not None else None
    if fmt == "json":
        doc = c.to_dict()
        if section is not None:
            doc[section.key] = section.to_dict()
        console.print(json.dumps(doc, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        for table in comparison_tables(c) + ([section.table()] if section is not None else []):
            console.print(table)
    return c


def run_matrix(results_dir: Path, architectures: ArchitecturesManifest, fmt: str,
               console: Console) -> list[AgreementMatrix]:
    """``zoobench compare RESULTS --matrix``: print the agreement matrices as ``fmt``; notes on stderr."""
    _check_format(fmt)
    matrices, notes = agreement_matrices(results_dir, architectures)
    if fmt == "json":
        console.print(json.dumps([m.to_dict() for m in matrices], indent=2), markup=False, highlight=False,
                      soft_wrap=True)
    else:
        for table in matrix_tables(matrices):
            console.print(table)
        if not matrices:
            console.print(f"no architecture has two or more finished runs in {results_dir}", highlight=False)
    err = Console(stderr=True)
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return matrices
