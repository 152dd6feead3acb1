"""`zoobench robustness` output: :class:`~.robustness.Robustness` as rich tables that fit 80 columns,
Markdown, CSV (one value per line: set, model, metric, corruption, severity) and JSON (everything).

Every set is named with its label, so a generated set says "(generated)" in every title, row and field,
and its mCE always comes with "generated set: not comparable with published mCE".
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import RankError
from .labels import Labels
from .robustness import (ALEXNET_CLEAN_ERR, ALEXNET_ERR, BENCHMARK, GENERATED_NOTE, AccuracyRow, AccuracySet,
                         CorruptionRow, CorruptionSet, Robustness, load_robustness)
from .tables import md_escape

FORMATS = ("table", "markdown", "csv", "json")
MIN_WIDTH = 64  # every table this wide at least (fits 80 columns): titles and captions wrap less
SOURCE = ("AlexNet errors: google-research/augmix imagenet.py ALEXNET_ERR; AlexNet clean error "
          f"{ALEXNET_CLEAN_ERR}: google-research/robustness_metrics (Hendrycks & Dietterich, ICLR 2019, App. C)")


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def rank_text(row: AccuracyRow) -> str:
    return "" if row.clean_rank is None else f"{row.clean_rank}→{row.shifted_rank}"


def change_text(row: AccuracyRow) -> str:
    c = row.rank_change
    return "" if c is None else f"{c:+d}" if c else "0"


def clean_text(row: AccuracyRow | CorruptionRow, error: bool = False) -> str:
    if row.clean is None:
        return ""
    return pct(row.clean.error if error else row.clean.acc1) + ("†" if row.clean.fallback else "")


def accuracy_title(s: AccuracySet) -> str:
    n = s.rows[0].n if s.rows else 0
    return f"{s.eval_set.heading}: robustness ({n} images; clean = {s.eval_set.clean})"


def accuracy_caption(s: AccuracySet) -> str:
    paired = sum(r.clean is not None for r in s.rows)
    text = ("Acc@1 in %; drop = clean - shifted Acc@1 in points; rank = on clean → on this set among the "
            f"{paired} paired model(s); change = places gained.")
    if any(r.clean is not None and r.clean.fallback for r in s.rows):
        text += " † = the imagenet-val run's Acc@1 (over 1000 classes), not comparable."
    return text + (" Generated set: not comparable with published numbers." if s.eval_set.generated else "")


def corruption_title(s: CorruptionSet) -> str:
    return f"{s.eval_set.heading}: {s.mce_label} (clean = {s.eval_set.clean})"


def corruption_caption(s: CorruptionSet) -> str:
    text = (f"In %. CE = error (mean over severities) / AlexNet's; {s.mce_label} = mean CE over "
            f"{len(s.corruptions)} corruption(s); relative CE = (error - clean error) / (AlexNet's - "
            f"{100 * ALEXNET_CLEAN_ERR:.2f}). AlexNet = 100.")
    return (f"{GENERATED_NOTE[0].upper()}{GENERATED_NOTE[1:]}. " if s.eval_set.generated else "") + text


# ---------------------------------------------------------------- rich tables

def _table(title: str, caption: str, columns: list[str], text: int = 2) -> Table:
    """Columns ``0..text-1`` left-aligned (column 1 may wrap: the model), the others right-aligned numbers."""
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  title_justify="left", caption_justify="left", min_width=MIN_WIDTH)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < text else "right", no_wrap=not (i == 1 and text == 2),
                         overflow="fold")
    return table


def accuracy_table(s: AccuracySet) -> Table:
    table = _table(accuracy_title(s), accuracy_caption(s), ["#", "Model", "Clean", "Shifted", "Drop", "Rank",
                                                            "Change"])
    for i, r in enumerate(s.rows, 1):
        table.add_row(str(i), r.identity.label, clean_text(r), pct(r.acc1), pct(r.drop), rank_text(r), change_text(r))
    return table


def mce_table(s: CorruptionSet) -> Table:
    mce = "mCE" + ("" if s.complete else " (partial)") + (" gen." if s.eval_set.generated else "")
    table = _table(corruption_title(s), corruption_caption(s), ["#", "Model", mce, "Rel. mCE", "Clean err"])
    for i, r in enumerate(s.rows, 1):
        table.add_row(str(i), r.identity.label, pct(r.mce), pct(r.relative_mce), clean_text(r, error=True))
    return table


def error_matrix(s: CorruptionSet) -> tuple[list[str], list[list[float | None]], list[str], list[list[float | None]]]:
    """(corruption labels, their errors per model; severity labels, their errors per model)."""
    names = s.corruptions + s.extra
    by_c = [[r.corruption_error.get(c) for r in s.rows] for c in names]
    labels = names[:len(s.corruptions)] + [f"{c} *" for c in s.extra]
    by_s = [[r.severity_error.get(sev) for r in s.rows] for sev in s.severities]
    return labels, by_c, [f"severity {sev}" for sev in s.severities], by_s


def _chunks(n: int, width: int | None) -> Iterator[range]:
    per = max(1, ((width or 80) - 22) // 8)
    for start in range(0, n, per):
        yield range(start, min(n, start + per))


def matrix_tables(s: CorruptionSet, width: int | None) -> list[Table]:
    """Error % by corruption (mean over severities) and by severity (mean over the benchmark corruptions),
    models as numbered columns, split so that each table fits ``width``."""
    c_labels, by_c, s_labels, by_s = error_matrix(s)
    out = []
    for what, labels, values in (("corruption", c_labels, by_c), ("severity", s_labels, by_s)):
        for cols in _chunks(len(s.rows), width):
            table = _table(f"{s.eval_set.heading}: error % by {what}",
                           "Columns: # of the mCE table." + (" * = extra, not in mCE."
                                                              if what == "corruption" and s.extra else ""),
                           [what] + [str(i + 1) for i in cols], text=1)
            for label, row in zip(labels, values):
                table.add_row(label, *(pct(row[i]) for i in cols))
            out.append(table)
    return out


def robustness_tables(rob: Robustness, width: int | None = None) -> list[Table]:
    tables = [accuracy_table(s) for s in rob.accuracy]
    for s in rob.corruption:
        tables += [mce_table(s)] + matrix_tables(s, width)
    return tables


# ---------------------------------------------------------------- Markdown

def md_table(headers: list[str], rows: list[list[str]], text_cols: int = 1) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |",
             "|" + "|".join("---" if i < text_cols else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def accuracy_markdown(s: AccuracySet) -> str:
    rows = [[s.eval_set.label, r.identity.label, r.run, r.clean.dataset if r.clean else "", clean_text(r),
             pct(r.acc1), pct(r.drop), rank_text(r), change_text(r)] for r in s.rows]
    return (f"**{md_escape(accuracy_title(s))}**\n\n" + md_table(
        ["Set", "Model", "Run", "Clean set", "Clean Acc@1 %", "Acc@1 %", "Drop (points)", "Rank", "Change"],
        rows, 4) + "\n" + md_escape(accuracy_caption(s)) + "\n")


def corruption_markdown(s: CorruptionSet) -> str:
    head = ["Set", "Model", "Run", s.mce_label + " %", "Relative mCE %", "Clean error %"]
    rows = [[s.eval_set.label, r.identity.label, r.run, pct(r.mce), pct(r.relative_mce), clean_text(r, True)]
            for r in s.rows]
    c_labels, by_c, s_labels, by_s = error_matrix(s)
    models = [r.identity.label for r in s.rows]
    by_corruption = md_table(["Corruption"] + models, [[lab] + [pct(v) for v in vals] for lab, vals in zip(c_labels, by_c)])
    by_severity = md_table(["Severity"] + models, [[lab] + [pct(v) for v in vals] for lab, vals in zip(s_labels, by_s)])
    return (f"**{md_escape(corruption_title(s))}**\n\n" + md_table(head, rows, 3) + "\n"
            + md_escape(corruption_caption(s)) + "\n\nError % by corruption (mean over severities; * = extra, "
            "not in mCE):\n\n" + by_corruption + "\nError % by severity (mean over the benchmark corruptions):\n\n"
            + by_severity)


def robustness_markdown(rob: Robustness) -> str:
    parts = [accuracy_markdown(s) for s in rob.accuracy] + [corruption_markdown(s) for s in rob.corruption]
    notes = "".join(f"- {md_escape(n)}\n" for n in rob.notes)
    return "\n".join(parts) + ("\nNotes:\n\n" + notes if notes else "") + f"\n{md_escape(SOURCE)}.\n"


# ---------------------------------------------------------------- CSV and JSON

CSV_FIELDS = ["dataset", "generated", "run", "framework", "model", "weights", "precision", "clean_dataset",
              "clean_run", "clean_fallback", "metric", "corruption", "severity", "value", "unit"]


def _csv_rows(rob: Robustness) -> Iterator[list[Any]]:
    def base(s: Any, r: AccuracyRow | CorruptionRow) -> list[Any]:
        c = r.clean
        return [s.eval_set.name, str(s.eval_set.generated).lower(), r.run, r.identity.framework, r.identity.model,
                r.identity.weights, r.identity.precision, c.dataset if c else "", c.run if c else "",
                str(c.fallback).lower() if c else ""]

    for s in rob.accuracy:
        for r in s.rows:
            for metric, value, unit in (("clean_acc1", clean_text(r).rstrip("†"), "%"), ("acc1", pct(r.acc1), "%"),
                                        ("drop", pct(r.drop), "points"), ("clean_rank", r.clean_rank, "rank"),
                                        ("shifted_rank", r.shifted_rank, "rank"), ("rank_change", r.rank_change, "places")):
                yield base(s, r) + [metric, "", "", "" if value is None else value, unit]
    for s in rob.corruption:
        for r in s.rows:
            b = base(s, r)
            yield b + ["mce" if s.complete else "partial_mce", "", "", pct(r.mce), "%"]
            yield b + ["relative_mce", "", "", pct(r.relative_mce), "%"]
            yield b + ["clean_error", "", "", clean_text(r, True).rstrip("†"), "%"]
            for c, by_sev in r.errors.items():
                yield b + ["ce", c, "", pct(r.ce.get(c)), "%"]
                yield b + ["relative_ce", c, "", pct(r.relative_ce.get(c)), "%"]
                yield b + ["error", c, "mean", pct(r.corruption_error.get(c)), "%"]
                yield from (b + ["error", c, sev, pct(e), "%"] for sev, e in sorted(by_sev.items()))


def robustness_csv(rob: Robustness) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    writer.writerows(_csv_rows(rob))
    return buf.getvalue()


def _set_dict(s: AccuracySet | CorruptionSet) -> dict[str, Any]:
    e = s.eval_set
    return {"dataset": e.name, "generated": e.generated, "label": e.label, "title": e.title, "clean": e.clean,
            "notes": s.notes}


def _row_dict(r: AccuracyRow | CorruptionRow) -> dict[str, Any]:
    return {**r.identity.to_dict(), "run": r.run, "clean": None if r.clean is None else dict(r.clean.__dict__)}


def robustness_dict(rob: Robustness) -> dict[str, Any]:
    accuracy = [{**_set_dict(s), "fit": s.fit, "rows": [
        {**_row_dict(r), "n": r.n, "acc1": r.acc1, "drop": r.drop, "clean_rank": r.clean_rank,
         "shifted_rank": r.shifted_rank, "rank_change": r.rank_change, "effective_robustness": s.effective(r)}
        for r in s.rows]} for s in rob.accuracy]
    corruption = [{**_set_dict(s), "mce_label": s.mce_label, "complete": s.complete,
                   "comparable": s.complete and not s.eval_set.generated, "corruptions": s.corruptions,
                   "extra": s.extra, "severities": s.severities, "rows": [
                       {**_row_dict(r), "mce": r.mce, "relative_mce": r.relative_mce,
                        "clean_error": None if r.clean is None else r.clean.error, "ce": r.ce,
                        "relative_ce": r.relative_ce, "corruption_error": r.corruption_error,
                        "severity_error": {str(k): v for k, v in r.severity_error.items()},
                        "errors": {c: {str(k): v for k, v in by.items()} for c, by in r.errors.items()}}
                       for r in s.rows]} for s in rob.corruption]
    alexnet = {"error": ALEXNET_ERR, "clean_error": ALEXNET_CLEAN_ERR, "corruptions": list(BENCHMARK),
               "source": SOURCE}
    return {"accuracy": accuracy, "corruption": corruption, "notes": rob.notes, "alexnet": alexnet}


def robustness_json(rob: Robustness) -> str:
    return json.dumps(robustness_dict(rob), indent=2)


# ---------------------------------------------------------------- the command

def run_robustness(results_dir: Path, labels: Labels, fmt: str, console: Console, mixed_precision: bool = False,
                   manifests: Path | None = None) -> Robustness:
    """``zoobench robustness``: print RESULTS_DIR's robustness as ``fmt``; notes on stderr."""
    if fmt not in FORMATS:
        raise RankError(f"unknown format {fmt!r}; use one of {'|'.join(FORMATS)}")
    rob, notes = load_robustness(results_dir, labels, mixed_precision, manifests)
    if fmt == "table":
        for i, table in enumerate(robustness_tables(rob, console.width)):
            if i:
                console.print()
            console.print(table)
    else:
        text = {"markdown": robustness_markdown, "csv": robustness_csv, "json": robustness_json}[fmt](rob)
        console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True, emoji=False)
    err = Console(stderr=True)
    for note in notes + (rob.notes if fmt != "markdown" else []):
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return rob
