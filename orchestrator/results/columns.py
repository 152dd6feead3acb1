"""The columns of ``zoobench rank``'s table (:data:`COLUMNS`, chosen with ``--columns a,b,c`` or
``--columns all``; :data:`COMPACT` is the default of the one-line-per-run layout) and the timm-style CSV
(``--format timm``: the header of timm's results-imagenet.csv, the framework in the model name)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import RankError
from .costs import fmt_bytes
from .records import RankRow


def _f(x: float | None, digits: int) -> str:
    return "" if x is None or x != x else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.3f}"


def _ci(ci: tuple[float, float]) -> str:
    return f"{100 * ci[0]:.3f}-{100 * ci[1]:.3f}"


def _p(row: RankRow) -> str:
    p = row.p_vs_next
    if p is None:
        return ""
    text = "<1e-300" if p == 0.0 else (f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}")
    return text + (" *" if row.significant_vs_next else "")


@dataclass(frozen=True)
class Column:
    """A table column: its ``--columns`` name, full and short (compact) header, whether it is numeric,
    its cell text and its value (None: unknown; optional columns are shown by default only when known)."""

    key: str
    header: str
    short: str
    numeric: bool
    text: Callable[[RankRow], str]
    value: Callable[[RankRow], Any]
    optional: bool = False
    help: str = ""


def _col(key: str, header: str, short: str, value: Callable[[RankRow], Any], text: Callable[[RankRow], str],
         optional: bool = False, numeric: bool = True, help: str = "") -> Column:
    return Column(key, header, short, numeric, text, value, optional, help)


_COLUMN_LIST = [
    _col("rank1", "Rank@1", "#1", lambda r: r.rank1, lambda r: str(r.rank1), help="competition rank by Acc@1"),
    _col("rank5", "Rank@5", "#5", lambda r: r.rank5, lambda r: str(r.rank5), help="rank by Acc@5"),
    _col("framework", "Platform", "Framework", lambda r: None, lambda r: r.result.platform, numeric=False,
         help="framework and version"),
    _col("model", "Model", "Model", lambda r: None, lambda r: r.result.model, numeric=False),
    _col("weights", "Weights", "Weights", lambda r: None, lambda r: r.result.weights, numeric=False),
    _col("precision", "Precision", "Prec", lambda r: None, lambda r: r.result.precision, numeric=False),
    _col("mode", "Mode", "Mode", lambda r: None, lambda r: r.result.mode, numeric=False, help="execution mode"),
    _col("n", "N", "N", lambda r: r.result.n, lambda r: str(r.result.n), help="images scored"),
    _col("acc1", "Acc@1 %", "Acc@1", lambda r: r.result.acc1, lambda r: _pct(r.result.acc1)),
    _col("acc1_ci", "Acc@1 95% CI", "Acc@1 CI", lambda r: r.result.ci1[0], lambda r: _ci(r.result.ci1)),
    _col("acc5", "Acc@5 %", "Acc@5", lambda r: r.result.acc5, lambda r: _pct(r.result.acc5)),
    _col("acc5_ci", "Acc@5 95% CI", "Acc@5 CI", lambda r: r.result.ci5[0], lambda r: _ci(r.result.ci5)),
    _col("img_s", "img/s", "img/s", lambda r: r.result.images_per_second, lambda r: _f(r.result.images_per_second, 1),
         help="end-to-end images/s of the evaluation run"),
    _col("p_next", "p vs next", "p next", lambda r: r.p_vs_next, _p, help="McNemar p against the row below"),
    _col("ece", "ECE %", "ECE", lambda r: r.result.ece, lambda r: _f(r.result.ece, 2), True,
         help="expected calibration error, 15 bins"),
    _col("overconf", "Over-conf. (points)", "OvConf", lambda r: r.result.overconfidence,
         lambda r: _f(r.result.overconfidence, 2), True, help="mean top-1 confidence minus Acc@1"),
    _col("nll", "NLL", "NLL", lambda r: r.result.nll, lambda r: _f(r.result.nll, 4), True, help="needs logits"),
    _col("brier", "Brier", "Brier", lambda r: r.result.brier, lambda r: _f(r.result.brier, 4), True,
         help="needs logits"),
    _col("gmacs", "GMACs", "GMACs", lambda r: r.result.gmacs, lambda r: _f(r.result.gmacs, 2), True),
    _col("params", "Params (M)", "ParamM", lambda r: r.result.params_m, lambda r: _f(r.result.params_m, 2), True),
    _col("latency", "Batch-1 ms (p50)", "ms@1", lambda r: r.result.latency_ms, lambda r: _f(r.result.latency_ms, 2),
         True, help="speed benchmark, batch 1, p50"),
    _col("best_img_s", "Best samples/s", "best/s", lambda r: r.result.best_ips, lambda r: _f(r.result.best_ips, 1),
         True, help="speed benchmark's best throughput"),
    _col("best_batch", "Best batch", "bs", lambda r: r.result.best_batch,
         lambda r: "" if r.result.best_batch is None else str(r.result.best_batch), True),
    _col("memory", "Peak memory", "Mem", lambda r: r.result.peak_memory_bytes,
         lambda r: fmt_bytes(r.result.peak_memory_bytes), True, help="at the best batch size"),
]
COLUMNS: dict[str, Column] = {c.key: c for c in _COLUMN_LIST}
COMPACT = ("rank1", "framework", "model", "weights", "precision", "mode", "acc1", "acc5", "ece", "img_s", "gmacs",
           "params")
FULL = tuple(k for k in COLUMNS if k not in ("n", "overconf"))  # over-confidence: --columns
# Shown by default only when some row differs from the usual value.
USUAL = {"weights": "imagenet", "precision": "fp32", "mode": "default"}
COLUMNS_HELP = ("comma-separated table columns, or 'all': " + ", ".join(COLUMNS) +
                f"; default when narrow: {', '.join(COMPACT)} (weights/precision/mode only when not "
                "imagenet/fp32/default, the others only when known)")


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """``--columns`` as column keys (None: the layout's defaults)."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() == "all":
        return tuple(COLUMNS)
    keys = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in COLUMNS]
    if unknown:
        raise RankError(f"unknown column {unknown[0]!r} in --columns; use 'all' or some of {','.join(COLUMNS)}")
    return keys


def shown(rows: list[RankRow], keys: tuple[str, ...]) -> list[Column]:
    """The default columns of ``keys`` worth showing: optional ones when some row has a value, weights,
    precision and mode when some row is not the usual, img/s when some row has a throughput."""
    out = []
    for key in keys:
        c = COLUMNS[key]
        if key in USUAL and all(c.text(r) == USUAL[key] for r in rows):
            continue
        if (c.optional or key == "img_s") and all(c.value(r) is None for r in rows):
            continue
        out.append(c)
    return out


# ---------------------------------------------------------------- timm

TIMM_FIELDS = ["model", "img_size", "top1", "top1_err", "top5", "top5_err", "param_count", "crop_pct",
               "interpolation"]


def timm_name(row: RankRow) -> str:
    """``pytorch/resnet50``; ``.random`` etc. for weights other than imagenet, ``-bf16``/``-compile`` for
    another precision or mode."""
    r = row.result
    name = f"{r.framework}/{r.model}" + ("" if r.weights == "imagenet" else f".{r.weights}")
    return name + ("" if r.precision == "fp32" else f"-{r.precision}") + ("" if r.mode == "default" else f"-{r.mode}")


def format_timm(rows: list[RankRow]) -> str:
    """The rows as timm's results-imagenet.csv (one evaluation set; unknown values empty)."""
    sets = {r.result.eval_set.label for r in rows}
    if len(sets) > 1:
        raise RankError(f"--format timm writes one evaluation set (timm keeps one file per set), these results hold "
                        f"{len(sets)}: {', '.join(sorted(sets))}; pass --dataset")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIMM_FIELDS)
    for row in rows:
        r = row.result
        crop_pct = "" if not (r.crop_size and r.resize_size) else f"{r.crop_size / r.resize_size:.3f}"
        writer.writerow([timm_name(row), r.crop_size or "", f"{100 * r.acc1:.3f}", f"{100 - 100 * r.acc1:.3f}",
                         f"{100 * r.acc5:.3f}", f"{100 - 100 * r.acc5:.3f}", _f(r.params_m, 2), crop_pct,
                         r.interpolation or ""])
    return buf.getvalue()
