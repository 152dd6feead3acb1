"""The cost and calibration sections of report.html (the default set's runs):

* "Accuracy vs cost" (``id="costs"``): Acc@1 against GMACs (``id="gmacs-img"``) and against batch-1
  latency (``id="latency-img"``), each with its Pareto front, when some run has the value; the table of
  costs (``id="costs-table"``: params, GMACs, latency, best samples/s, peak memory, mode; a run on a
  front is marked);
* "Calibration" (``id="calibration"``): ECE, over-confidence, NLL/Brier (``id="calibration-table"``)
  and a reliability diagram per run (``id="reliability-img"``, small multiples).

Plots are inline PNGs (data: URIs); every string from a run is escaped.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from .costplots import (AXES, GMACS_PNG, LATENCY_PNG, front_of, has_axis, has_reliability, plot_accuracy,
                        plot_reliability)
from .costs import fmt_bytes
from .htmlparts import Cell, esc, png_uri, sortable_table
from .records import RankRow
from .tables import is_real

COST_HEADERS = ["Run", "Framework", "Model", "Mode", "Acc@1 %", "Params (M)", "GMACs", "Batch-1 ms (p50)",
                "Best samples/s", "Best batch", "Peak memory", "End-to-end img/s", "Pareto front"]
COST_NUMERIC = [False] * 4 + [True] * 8 + [False]
CAL_HEADERS = ["Run", "Framework", "Model", "Acc@1 %", "Mean confidence %", "Over-confidence (points)", "ECE %",
               "NLL", "Brier"]
CAL_NUMERIC = [False] * 3 + [True] * 6


def _num(x: float | None, digits: int) -> Cell:
    return ("" if x is None or x != x else f"{x:.{digits}f}", x)


def _uri(draw: Callable[[Any], None], given: Path | None) -> str | None:
    if given is not None and given.is_file():
        return png_uri(given)
    buf = io.BytesIO()
    draw(buf)
    return png_uri(buf.getvalue())


def _img(img_id: str, uri: str | None, alt: str) -> str:
    return "" if uri is None else f'<img id="{img_id}" src="{uri}" alt="{esc(alt)}" style="max-width:100%">'


def _fronts(rows: list[RankRow]) -> dict[str, list[str]]:
    """Run name -> the axes (img/s, GMACs, latency) on whose Pareto front it is."""
    names = {"ips": "img/s", "gmacs": "GMACs", "latency": "latency"}
    results = [r.result for r in rows]
    out: dict[str, list[str]] = {}
    for key, axis in AXES.items():
        for r in front_of(results, axis):
            out.setdefault(r.run, []).append(names[key])
    return out


def costs_section(rows: list[RankRow], figures: dict[str, Path] | None = None) -> str:
    """The section (always there: it says what is missing); ``figures``: PNG files already written, by name."""
    figures = figures or {}
    real = is_real(rows)
    fronts = _fronts(rows)
    out = ['<h2 id="costs">Accuracy vs cost</h2>',
           '<p class="small">Pareto front: the runs no other run beats on both accuracy and cost (higher or equal '
           "Acc@1 at lower or equal cost, one strictly); dashed in the plots. GMACs and parameters from run.json's "
           "model_facts, latency (batch 1, p50), best samples/s and peak memory (at the best batch size) from "
           "RESULTS/speed/*/bench.json of the same framework, model, precision and mode.</p>"]
    for key, name, img_id, alt in (("gmacs", GMACS_PNG, "gmacs-img", "Acc@1 against GMACs"),
                                   ("latency", LATENCY_PNG, "latency-img", "Acc@1 against batch-1 latency")):
        if has_axis(rows, key):
            out.append(_img(img_id, _uri(lambda f, key=key: plot_accuracy(rows, f, key, real), figures.get(name)),
                            alt))
        else:
            out.append(f'<p class="note" id="{img_id}-missing">{esc(AXES[key].none)}: no plot of Acc@1 against '
                       f"{esc(AXES[key].label.split(' (')[0])}.</p>")
    table: list[list[Cell]] = []
    for row in rows:
        r = row.result
        table.append([(r.run, None), (r.platform, None), (r.model, None), (r.mode, None), _num(100 * r.acc1, 3),
                      _num(r.params_m, 2), _num(r.gmacs, 2), _num(r.latency_ms, 2), _num(r.best_ips, 1),
                      (str(r.best_batch or ""), r.best_batch),
                      (fmt_bytes(r.peak_memory_bytes), r.peak_memory_bytes), _num(r.images_per_second, 1),
                      (", ".join(fronts.get(r.run, [])), None)])
    out.append(sortable_table("costs-table", COST_HEADERS, COST_NUMERIC, table))
    return "\n".join(out)


def calibration_section(rows: list[RankRow]) -> str:
    """The calibration table and reliability diagrams of the runs with stored top-1 probabilities."""
    out = ['<h2 id="calibration">Calibration</h2>',
           '<p class="small">From the stored top-1 probability of each image: ECE with 15 equal-width bins '
           "(Guo et al. 2017; Minderer et al. 2021), in %; over-confidence = mean top-1 probability minus Acc@1, in "
           "points (negative: under-confident). NLL and the Brier score (1000 classes, softmax in float64) need "
           "the logits (<code>--save-logits</code>). Click a header to sort.</p>"]
    known = [row.result for row in rows if row.result.calibration is not None]
    if not known:
        out.append('<p class="note">No run stores top-1 probabilities; no calibration.</p>')
        return "\n".join(out)
    table: list[list[Cell]] = []
    for r in known:
        cal = r.calibration
        assert cal is not None
        nll = _num(cal.nll, 4) if cal.nll is not None else (cal.why_no_nll, None)
        brier = _num(cal.brier, 4) if cal.brier is not None else (cal.why_no_nll, None)
        table.append([(r.run, None), (r.platform, None), (r.model, None), _num(100 * r.acc1, 3),
                      _num(100 * cal.mean_confidence, 3), _num(cal.overconfidence, 3), _num(cal.ece, 3), nll, brier])
    out.append(sortable_table("calibration-table", CAL_HEADERS, CAL_NUMERIC, table))
    if has_reliability(rows):
        out.append('<h3 id="reliability">Reliability diagrams</h3>\n<p class="small">Bars: accuracy of each '
                   "confidence bin (darker: more images); red dots: the bin's mean confidence; dotted: perfect "
                   "calibration. Bars below the diagonal: over-confident.</p>")
        out.append(_img("reliability-img", _uri(lambda f: plot_reliability(rows, f), None),
                        "Reliability diagram of each run"))
    return "\n".join(out)
