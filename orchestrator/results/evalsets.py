"""Which evaluation set each run was made on: its run.json's ``dataset`` (absent or null on older runs:
the default set, ImageNet val) and ``data.generated`` (a set `zoobench data corrupt` made), joined with
what manifests/datasets.yaml says of that set as an :class:`~.records.EvalSet`.

Runs are grouped by (set, generated) as run.json says, never by folder; groups come in one order: the
default set first, then the manifest's order, then sets the manifest does not know (by name), a
generated set right after its official one. ``--dataset NAME`` picks a set (its official and generated
runs), ``--dataset NAME-generated`` the generated runs only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import GENERATED_SUFFIX, DatasetsManifest, load_datasets
from ..errors import RankError
from ..paths import MANIFEST_DIR
from .records import DEFAULT_SET, EvalSet


def manifest(manifests: Path | None = None) -> DatasetsManifest:
    """manifests/datasets.yaml (from ``manifests``, else the shipped folder)."""
    return load_datasets(Path(manifests) if manifests is not None else MANIFEST_DIR)


def is_generated(run: dict[str, Any]) -> bool:
    """True when run.json's ``data.generated`` records how the set was generated."""
    data = run.get("data")
    return isinstance(data, dict) and bool(data.get("generated"))


def set_suffix(run: dict[str, Any]) -> str:
    """``""`` for a run of the default set, else `` [imagenet-r]`` / `` [imagenet-c (generated)]`` (no manifest read)."""
    name = run.get("dataset") if isinstance(run.get("dataset"), str) and run.get("dataset") else DEFAULT_SET
    if name == DEFAULT_SET and not is_generated(run):
        return ""
    return f" [{name}{' (generated)' if is_generated(run) else ''}]"


def eval_set_of(run: dict[str, Any], datasets: DatasetsManifest) -> EvalSet:
    """The :class:`EvalSet` a run.json names (the default set when it names none)."""
    name = run.get("dataset")
    name = name if isinstance(name, str) and name.strip() else datasets.default
    generated = is_generated(run)
    d = datasets.datasets.get(name)
    if d is None:
        return EvalSet(name, generated, title=name, default=False, known=False)
    return EvalSet(name, generated, title=d.title, default=d.default, layout=d.layout, scoring=d.scoring,
                   clean=d.clean, class_subset=d.class_subset, corruptions=tuple(d.corruptions),
                   extra_corruptions=tuple(d.extra_corruptions), severities=d.severities)


def set_order(s: EvalSet, datasets: DatasetsManifest) -> tuple[int, int, str, bool]:
    """Sort key of a group: default set first, then manifest order, then unknown sets by name."""
    names = list(datasets.datasets)
    position = names.index(s.name) if s.name in names else len(names)
    return (0 if s.default else 1), position, s.name, s.generated


def matches(s: EvalSet, wanted: str) -> bool:
    """Whether ``--dataset wanted`` selects set ``s``."""
    return wanted == s.name or (s.generated and wanted == s.name + GENERATED_SUFFIX)


def describe(counts: dict[EvalSet, int]) -> str:
    """``imagenet-val: 4 run(s), imagenet-r: 2 run(s)`` for the sets a folder holds."""
    return ", ".join(f"{s.label}: {n} run(s)" for s, n in counts.items()) or "no finished run"


Parts = tuple[list[tuple[str, int]], np.ndarray]  # (corruption, severity) keys, the key index of each row


def corruption_parts(paths: list[str], run: str = "") -> Parts:
    """How the rows of a run on a set of layout ``corruption`` split: ((corruption, severity) of each
    distinct ``<corruption>/<severity>/`` path prefix, the prefix's index for each path)."""
    keys: dict[tuple[str, int], int] = {}
    by_prefix: dict[str, int] = {}
    codes = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        prefix = path[:path.find("/", path.find("/") + 1) + 1]
        code = by_prefix.get(prefix)
        if code is None:
            corruption, _, severity = prefix.rstrip("/").partition("/")
            if not (corruption and severity.isdecimal()):
                raise RankError(f"run {run!r}: image {path!r} is not under <corruption>/<severity>/ (the "
                                "ImageNet-C layout); re-run it on a set `zoobench data prepare` or "
                                "`zoobench data corrupt` wrote")
            code = by_prefix[prefix] = keys.setdefault((corruption, int(severity)), len(keys))
        codes[i] = code
    return list(keys), codes


def corruption_counts(parts: Parts, keep: np.ndarray, correct1: np.ndarray) -> dict[tuple[str, int], tuple[int, int]]:
    """(corruption, severity) -> (top-1 right, images scored); ``correct1`` is over the ``keep`` rows."""
    keys, codes = parts
    kept = codes[keep]
    right = np.bincount(kept, weights=correct1.astype(np.float64), minlength=len(keys))
    total = np.bincount(kept, minlength=len(keys))
    return {k: (int(round(right[i])), int(total[i])) for i, k in enumerate(keys)}
