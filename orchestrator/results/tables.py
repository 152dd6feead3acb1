"""The ranking's output formats: a rich table that fits the terminal, Markdown, CSV and JSON, with
their shared cells, headers, title and caption. Rows of several evaluation sets are split into one
ranking per set (:func:`split_groups`); CSV and JSON rows carry their set (``dataset``, ``generated``)."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .columns import COLUMNS, COMPACT, FULL, USUAL, Column, shown
from .labels import REAL
from .records import ALPHA, RankRow

FORMATS = ("table", "markdown", "csv", "json", "timm", "none")


def pct(x: float) -> str:
    return f"{100 * x:.3f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    if p == 0.0:
        return "<1e-300"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"


def fmt_ips(ips: float | None) -> str:
    return "" if ips is None else f"{ips:.1f}"


CAPTION = ("95% CI: Wilson. p vs next: exact McNemar test on Acc@1 against the row below; "
           f"* = significant (p < {ALPHA}). Weights 'random' = untrained baseline.")


def is_real(rows: list[RankRow]) -> bool:
    """True when the rows are scored against the ReaL labels."""
    return bool(rows) and rows[0].result.labels == REAL


def real_note(rows: list[RankRow]) -> str:
    """One sentence on what ReaL scoring means and how many images it scored ("" for the usual labels)."""
    if not is_real(rows):
        return ""
    r = rows[0].result
    return (f"ReaL labels (Beyer et al. 2020): right = the prediction is in the image's set of reassessed labels; "
            f"{r.n} of {r.n_images} images have one and are scored.")


def split_groups(rows: list[RankRow]) -> list[list[RankRow]]:
    """``rows`` split by evaluation set, in the order each set first comes."""
    groups: dict[tuple[str, bool], list[RankRow]] = {}
    for row in rows:
        groups.setdefault(row.result.eval_set.key, []).append(row)
    return list(groups.values())


def primary(groups: list[list[RankRow]]) -> list[RankRow]:
    """The default set's rows (ImageNet val) when there are some, else the first set's."""
    return next((g for g in groups if g[0].result.eval_set.default and not g[0].result.eval_set.generated),
                groups[0] if groups else [])


def set_note(rows: list[RankRow]) -> str:
    """What scoring a set other than val means: a class restriction, ImageNet-C's pooled Acc@1, generated."""
    if not rows:
        return ""
    r = rows[0].result
    s, notes = r.eval_set, []
    if r.classes:
        notes.append(f"Logits restricted to the set's classes ({r.classes}) before the top-k.")
    if s.scoring == "corruption":
        notes.append("Acc@1 over every corruption and severity together; `zoobench robustness` gives the mCE.")
    if s.generated:
        notes.append("Generated set (`zoobench data corrupt`): not comparable with published numbers.")
    return " ".join(notes)


def caption(rows: list[RankRow]) -> str:
    text = CAPTION.replace("on Acc@1", "on ReaL Acc@1") if is_real(rows) else CAPTION
    return " ".join(t for t in (set_note(rows), real_note(rows), text) if t)


def title(rows: list[RankRow]) -> str:
    r = rows[0].result if rows else None
    name = "ImageNet" if r is None or (r.eval_set.default and not r.eval_set.generated) else r.eval_set.heading
    if r is not None and r.labels == REAL:
        return f"{name} ranking, ReaL labels ({r.n} of {r.n_images} images)"
    return f"{name} ranking ({r.n if r else 0} images)"


def text_cells(row: RankRow) -> list[str]:
    r = row.result
    sig = "" if row.p_vs_next is None else (" *" if row.significant_vs_next else "")
    return [str(row.rank1), str(row.rank5), r.platform, r.model, r.weights, r.precision, str(r.n),
            pct(r.acc1), f"{pct(r.ci1[0])}-{pct(r.ci1[1])}", pct(r.acc5), f"{pct(r.ci5[0])}-{pct(r.ci5[1])}",
            fmt_ips(r.images_per_second), fmt_p(row.p_vs_next) + sig]


TEXT_HEADERS = ("Platform", "Model", "Weights", "Precision")
HEADERS = ["Rank@1", "Rank@5", "Platform", "Model", "Weights", "Precision", "N", "Acc@1 %", "Acc@1 95% CI",
           "Acc@5 %", "Acc@5 95% CI", "img/s", "p vs next"]


def headers(rows: list[RankRow]) -> list[str]:
    """HEADERS, with the accuracy columns named ReaL Acc@k for ReaL rows."""
    return [h.replace("Acc@", "ReaL Acc@") for h in HEADERS] if is_real(rows) else list(HEADERS)


def format_table(rows: list[RankRow], width: int | None = None, columns: tuple[str, ...] | None = None) -> Table:
    """A rich table that fits ``width`` where it can: full, then without CI columns, then compact
    (framework names with a version legend, the :data:`~.columns.COMPACT` columns, one line per row).
    ``columns`` (``--columns``): exactly these, boxed when they fit, else compact."""
    wide = Console(width=10_000)

    def measure(table: Table) -> int:
        return Measurement.get(wide, wide.options, table).maximum

    for layout in (("full", "no-ci", "compact") if columns is None else ("full", "compact")):
        table = _build_table(rows, layout, columns=columns)
        if width is None or measure(table) <= width:
            return table
    # Still too wide: cut the longest model names (with an ellipsis) rather than wrap a row.
    longest = max((len(r.result.model) for r in rows), default=0)
    excess = measure(table) - width
    return _build_table(rows, "compact", model_width=max(6, longest - excess), columns=columns)


def _short_version(version: str) -> str:
    return version.split("+", 1)[0]


def _compact_platforms(rows: list[RankRow]) -> tuple[list[str], str]:
    """Platform cells for the compact layout and their legend: the framework alone when it has one
    version in the table, else the framework and its version without the local part (+cu130); a converted
    run adds its source image, Keras on JAX or PyTorch its back end (``onnxruntime (pytorch)``, ``keras (jax)``)."""
    versions: dict[str, set[str]] = {}
    for row in rows:
        versions.setdefault(row.result.framework, set()).add(row.result.framework_version)
    cells = [(r.result.framework if len(versions[r.result.framework]) == 1
              else f"{r.result.framework} {_short_version(r.result.framework_version)}".strip())
             + (f" ({r.result.platform_note.split()[0]})" if r.result.platform_note else "") for r in rows]
    legend = "; ".join(f"{fw} {', '.join(sorted(v for v in vs if v)) or '(version unknown)'}"
                       for fw, vs in sorted(versions.items()))
    return cells, f"Versions: {legend}."


def _layout_columns(rows: list[RankRow], layout: str, columns: tuple[str, ...] | None) -> list[Column]:
    if columns is not None:
        return [COLUMNS[k] for k in columns]
    if layout == "compact":
        return shown(rows, COMPACT)
    keys = FULL if layout == "full" else tuple(k for k in FULL if not k.endswith("_ci"))
    always = {"weights", "precision", "img_s"}  # as the full table always had them
    return [COLUMNS[k] for k in keys if k in always or shown(rows, (k,))]


def _header(c: Column, rows: list[RankRow], compact: bool) -> str:
    """The column's header (short when compact), ReaL Acc@k / ReaL@k for ReaL rows."""
    name = c.short if compact else c.header
    if not is_real(rows):
        return name
    return name.replace("Acc@", "ReaL@") if compact else name.replace("Acc@", "ReaL Acc@")


def _build_table(rows: list[RankRow], layout: str, model_width: int | None = None,
                 columns: tuple[str, ...] | None = None) -> Table:
    text = caption(rows)
    platforms = [r.result.platform for r in rows]
    cols = _layout_columns(rows, layout, columns)
    keys = {c.key for c in cols}
    if not keys & {"acc1_ci", "acc5_ci"}:
        text = text.replace("95% CI: Wilson. ", "")
    if "p_next" not in keys:
        text = re.sub(r"p vs next: .*?\)\. ", "", text)
    if not any(r.result.weights == "random" for r in rows):
        text = text.replace(" Weights 'random' = untrained baseline.", "")
    if columns is None and layout != "full":
        text += " Widen the terminal or pass --columns all for 95% CIs, p vs next and costs."
    compact = layout == "compact"
    if compact:
        platforms, legend = _compact_platforms(rows)
        text = f"#1 = Rank@1; accuracies and ECE in %. {legend} " + text
        table = Table(title=title(rows), caption=text, box=box.SIMPLE_HEAD, show_edge=False, padding=0,
                      collapse_padding=True)
    else:
        table = Table(title=title(rows), caption=text)
    for c in cols:
        if compact:  # one line per row, whatever the width
            table.add_column(_header(c, rows, True), justify="right" if c.numeric else "left", no_wrap=True,
                             overflow="ellipsis", max_width=model_width if c.key == "model" else None)
        else:
            table.add_column(_header(c, rows, False), justify="right" if c.numeric else "left", overflow="fold",
                             no_wrap=c.numeric)
    for row, platform in zip(rows, platforms):
        cells = []
        for c in cols:
            cell = Text(platform if c.key == "framework" else c.text(row))
            if c.key == "weights" and row.result.weights != "imagenet":
                cell.stylize("bold red" if row.result.weights == "random" else "yellow")
            elif c.key in ("precision", "mode") and c.text(row) != USUAL[c.key]:
                cell.stylize("yellow")
            cells.append(cell)
        table.add_row(*cells, style="dim" if row.result.weights == "random" else None)
    return table


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&!$])")


def md_escape(text: str) -> str:
    """``text`` (a model, framework or run name from a file) as literal Markdown text, also inside a
    table cell: the characters that make emphasis, code, links, HTML, headings, math or a cell border
    are backslash-escaped, line breaks become spaces."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def format_markdown(rows: list[RankRow]) -> str:
    """One Markdown table (and caption) per evaluation set, each under its title when there are several."""
    groups = split_groups(rows)
    if len(groups) > 1:
        return "\n".join(f"**{md_escape(title(g))}**\n\n" + _markdown_table(g) for g in groups)
    return _markdown_table(rows)


def _markdown_table(rows: list[RankRow]) -> str:
    names = headers(rows)
    lines = ["| " + " | ".join(names) + " |",
             "|" + "|".join("---:" if h not in TEXT_HEADERS else "---" for h in HEADERS) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in text_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + caption(rows) + "\n"


CSV_FIELDS = ["rank1", "rank5", "platform", "model", "weights", "precision", "n", "acc1_pct", "acc1_ci_low_pct",
              "acc1_ci_high_pct", "acc5_pct", "acc5_ci_low_pct", "acc5_ci_high_pct", "images_per_second",
              "p_vs_next", "significant_vs_next", "run", "labels", "n_images", "dataset", "generated"]
COST_FIELDS = ["mode", "params_m", "gmacs", "latency_ms", "best_samples_per_second", "best_batch_size",
               "peak_memory_bytes", "ece_pct", "mean_confidence", "overconfidence_points", "nll", "brier"]


def _csv_value(v: Any) -> str:
    """A cost cell: "" when unknown, floats with 6 significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def format_csv(rows: list[RankRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS + COST_FIELDS)
    for row in rows:
        r = row.result
        writer.writerow([row.rank1, row.rank5, r.platform, r.model, r.weights, r.precision, r.n, pct(r.acc1),
                         pct(r.ci1[0]), pct(r.ci1[1]), pct(r.acc5), pct(r.ci5[0]), pct(r.ci5[1]),
                         fmt_ips(r.images_per_second),
                         "" if row.p_vs_next is None else f"{row.p_vs_next:.6g}",
                         "" if row.significant_vs_next is None else str(row.significant_vs_next).lower(), r.run,
                         r.labels, r.n_images, r.eval_set.name, str(r.eval_set.generated).lower()]
                        + [_csv_value(r.costs()[k]) for k in COST_FIELDS])
    return buf.getvalue()


def format_json(rows: list[RankRow]) -> str:
    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    return json.dumps([clean(row.to_dict()) for row in rows], indent=2)
