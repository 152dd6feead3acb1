"""The Robustness section of report.html (only when the results hold runs of shifted sets): the accuracy
table of V2/R/A/Sketch runs against their clean runs (``id="robustness-table"``) with the
effective-robustness plot (``id="effective-robustness-img"``), and for ImageNet-C the mCE table
(``id="mce-table"``), the error per corruption and per severity, and the mCE bar chart
(``id="mce-img"``). Plots are inline PNGs (data: URIs); every string from a run is escaped.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from .htmlparts import Cell, esc, png_uri, sortable_table
from .records import ModelResult
from .robustness import GENERATED_NOTE, CorruptionSet, Robustness, robustness
from .robustplots import ER_PNG, MCE_PNG, has_mce, has_pairs, plot_effective_robustness, plot_mce
from .robusttables import (SOURCE, accuracy_caption, accuracy_title, change_text, clean_text, corruption_caption,
                           corruption_title, error_matrix, pct)

ACCURACY_HEADERS = ["Set", "Model", "Run", "Clean set", "Clean Acc@1 %", "Acc@1 %", "Drop (points)", "Rank clean",
                    "Rank shifted", "Change", "Effective robustness (points)"]
ACCURACY_NUMERIC = [False] * 4 + [True] * 7
MCE_HEADERS = ["Set", "Model", "Run", "mCE %", "Relative mCE %", "Clean error %", "Status"]
MCE_NUMERIC = [False] * 3 + [True] * 3 + [False]


def _figure(plot: Callable[[Robustness, Any], None], rob: Robustness, given: Path | None) -> str | None:
    """A data: URI of the PNG ``given``, else of the plot drawn now."""
    if given is not None:
        return png_uri(given)
    buf = io.BytesIO()
    plot(rob, buf)
    return png_uri(buf.getvalue())


def _img(img_id: str, uri: str | None, alt: str) -> str:
    return "" if uri is None else f'<img id="{img_id}" src="{uri}" alt="{esc(alt)}" style="max-width:100%">'


def accuracy_html(rob: Robustness, figure: str | None) -> str:
    rows: list[list[Cell]] = []
    for s in rob.accuracy:
        for r in s.rows:
            eff = s.effective(r)
            rows.append([(s.eval_set.label, None), (r.identity.label, None), (r.run, None),
                         (r.clean.dataset if r.clean else "", None), (clean_text(r), r.clean and r.clean.acc1),
                         (pct(r.acc1), r.acc1), (pct(r.drop), r.drop), (str(r.clean_rank or ""), r.clean_rank),
                         (str(r.shifted_rank or ""), r.shifted_rank), (change_text(r), r.rank_change),
                         (pct(eff), eff)])
    captions = "".join(f"<li><b>{esc(accuracy_title(s))}</b>: {esc(accuracy_caption(s))}</li>" for s in rob.accuracy)
    return ('<h3 id="robustness-accuracy">Accuracy under distribution shift</h3>\n'
            f'<ul class="small">{captions}</ul>\n'
            + sortable_table("robustness-table", ACCURACY_HEADERS, ACCURACY_NUMERIC, rows) + "\n"
            + '<p class="small">Effective robustness (Taori et al. 2020): shifted Acc@1 minus what the probit-space '
              "linear fit over the set's runs predicts from clean Acc@1.</p>\n"
            + _img("effective-robustness-img", figure, "Shifted against clean Acc@1 on probit axes"))


def _status(s: CorruptionSet) -> str:
    if s.eval_set.generated:
        return GENERATED_NOTE
    return "benchmark (15 corruptions)" if s.complete else s.mce_label


def _matrix_html(s: CorruptionSet, i: int) -> str:
    c_labels, by_c, s_labels, by_s = error_matrix(s)
    models = [r.identity.label for r in s.rows]
    out = []
    for what, labels, values in (("corruption", c_labels, by_c), ("severity", s_labels, by_s)):
        rows = [[(lab, None)] + [(pct(v), v) for v in vals] for lab, vals in zip(labels, values)]
        out.append(f'<h4>{esc(s.eval_set.heading)}: error % by {what}</h4>\n'
                   + sortable_table(f"{what}-table-{i}", [what.capitalize()] + models,
                                    [False] + [True] * len(models), rows))
    return "\n".join(out)


def corruption_html(rob: Robustness, figure: str | None) -> str:
    rows: list[list[Cell]] = []
    for s in rob.corruption:
        for r in s.rows:
            clean_err = r.clean.error if r.clean else None
            rows.append([(s.eval_set.label, None), (r.identity.label, None), (r.run, None), (pct(r.mce), r.mce),
                         (pct(r.relative_mce), r.relative_mce), (clean_text(r, error=True), clean_err),
                         (_status(s), None)])
    captions = "".join(f"<li><b>{esc(corruption_title(s))}</b>: {esc(corruption_caption(s))}</li>"
                       for s in rob.corruption)
    matrices = "\n".join(_matrix_html(s, i) for i, s in enumerate(rob.corruption))
    return ('<h3 id="robustness-corruption">ImageNet-C: mean corruption error</h3>\n'
            f'<ul class="small">{captions}</ul>\n' + sortable_table("mce-table", MCE_HEADERS, MCE_NUMERIC, rows)
            + "\n" + _img("mce-img", figure, "mCE per model") + "\n" + matrices)


def robustness_section(results: list[ModelResult], rob: Robustness | None = None,
                       figures: dict[str, Path] | None = None) -> str:
    """The section ("" without shifted sets); ``rob`` and ``figures`` (PNG files by name) when already made."""
    rob = robustness(results) if rob is None else rob
    if rob.empty:
        return ""
    figures = figures or {}
    fresh = not figures
    out = ['<h2 id="robustness">Robustness</h2>',
           '<p class="small">Each run of a shifted set against its clean run: the run of the set\'s clean '
           "reference with the same framework, model, weights and precision. Click a header to sort.</p>"]
    if rob.accuracy:
        figure = _figure(plot_effective_robustness, rob, None if fresh else figures.get(ER_PNG)) \
            if has_pairs(rob) else None
        out.append(accuracy_html(rob, figure))
    if rob.corruption:
        figure = _figure(plot_mce, rob, None if fresh else figures.get(MCE_PNG)) if has_mce(rob) else None
        out.append(corruption_html(rob, figure))
    if rob.notes:
        out.append('<ul class="note" id="robustness-notes">' + "".join(f"<li>{esc(n)}</li>" for n in rob.notes)
                   + "</ul>")
    out.append(f'<p class="small">{esc(SOURCE)}.</p>')
    return "\n".join(out)
