"""Accuracy against what a model costs, and the reliability diagrams (matplotlib PNGs beside results.md,
inlined in report.html):

* Acc@1 against images/s (acc_vs_speed.png), GMACs (acc_vs_gmacs.png) and batch-1 latency
  (acc_vs_latency.png), one colour and marker per framework, the Pareto front marked: the runs no other
  run beats on both axes (higher or equal accuracy at lower or equal cost, one of them strictly);
* a reliability diagram per run (small multiples): per bin of the top-1 probability (15 equal-width
  bins) the accuracy against the mean confidence, the bar's shade the bin's share of the images, y = x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .records import ModelResult, RankRow

MARKERS = "os^Dv<>PX*hp"
GMACS_PNG = "acc_vs_gmacs.png"
LATENCY_PNG = "acc_vs_latency.png"
RELIABILITY_COLUMNS = 6


@dataclass(frozen=True)
class Axis:
    """A cost axis: what it reads from a result, its label, whether more is better (throughput)."""

    key: str
    label: str
    value: Callable[[ModelResult], float | None]
    higher_is_better: bool
    title: str
    none: str


AXES = {
    "ips": Axis("ips", "images / second (end to end, log scale)", lambda r: r.images_per_second, True,
                "Accuracy vs throughput", "no throughput recorded"),
    "gmacs": Axis("gmacs", "GMACs per image (log scale)", lambda r: r.gmacs, False, "Accuracy vs compute",
                  "no MACs recorded (run.json model_facts)"),
    "latency": Axis("latency", "batch-1 latency, ms p50 (log scale)", lambda r: r.latency_ms, False,
                    "Accuracy vs batch-1 latency", "no batch-1 latency (zoobench speed)"),
}


def pareto_front(costs: Sequence[float], accs: Sequence[float]) -> list[bool]:
    """For each point, True when no other point has accuracy >= and cost <= with one of them strictly
    better (lower cost is better; negate a throughput)."""
    out = []
    for i, (c, a) in enumerate(zip(costs, accs)):
        dominated = any(cj <= c and aj >= a and (cj < c or aj > a)
                        for j, (cj, aj) in enumerate(zip(costs, accs)) if j != i)
        out.append(not dominated)
    return out


def front_of(results: list[ModelResult], axis: Axis) -> list[ModelResult]:
    """The results on the Pareto front of ``axis`` (those with a value), by cost ascending."""
    known = [r for r in results if axis.value(r) is not None]
    sign = -1.0 if axis.higher_is_better else 1.0
    flags = pareto_front([sign * float(axis.value(r)) for r in known], [r.acc1 for r in known])  # type: ignore[arg-type]
    return sorted((r for r, f in zip(known, flags) if f), key=lambda r: sign * float(axis.value(r)))  # type: ignore[arg-type]


def _figure(width: float, height: float, dpi: int = 120) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def has_axis(rows: list[RankRow], key: str) -> bool:
    return any(AXES[key].value(r.result) is not None for r in rows)


def _scatter(ax: Any, points: list[ModelResult], axis: Axis) -> None:
    frameworks = sorted({r.platform for r in points})
    for i, fw in enumerate(frameworks):
        mine = [r for r in points if r.platform == fw]
        ax.scatter([axis.value(r) for r in mine], [100 * r.acc1 for r in mine], label=fw, color=f"C{i % 10}",
                   marker=MARKERS[i % len(MARKERS)], s=40, zorder=3)
        for r in mine:
            ax.annotate(r.model + (" (random)" if r.weights == "random" else ""), (axis.value(r), 100 * r.acc1),
                        textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = front_of(points, axis)
    if front:
        ax.step([axis.value(r) for r in front], [100 * r.acc1 for r in front],
                where="post", color="black", linestyle="--", linewidth=1,
                zorder=2, label="Pareto front")
        ax.scatter([axis.value(r) for r in front], [100 * r.acc1 for r in front], s=140, facecolors="none",
                   edgecolors="black", linewidths=1, zorder=4)


def plot_accuracy(rows: list[RankRow], out: Any, key: str, real: bool = False) -> None:
    """Acc@1 (%) of ``rows`` against the cost ``key`` (ips | gmacs | latency) on a log axis, the Pareto
    front dashed and its runs circled; PNG written to ``out``."""
    axis = AXES[key]
    fig = _figure(10, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    points = [r.result for r in rows if axis.value(r.result) is not None]
    if points:
        _scatter(ax, points, axis)
        ax.set_xscale("log")
        ax.legend(title="framework", fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, axis.none, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(axis.label)
    ax.set_ylabel("ReaL Acc@1 (%)" if real else "Acc@1 (%)")
    n = rows[0].result.n if rows else 0
    name = "" if not rows or rows[0].result.eval_set.default else f"{rows[0].result.eval_set.heading}, "
    ax.set_title(f"{axis.title} ({name}{n} images{', ReaL labels' if real else ''}; dashed: Pareto front)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, format="png")


def has_reliability(rows: list[RankRow]) -> bool:
    return any(r.result.calibration is not None for r in rows)


def _reliability_panel(ax: Any, r: ModelResult) -> None:
    cal = r.calibration
    assert cal is not None
    k = len(cal.counts)
    edges = np.arange(k) / k
    share = cal.counts / max(1, int(cal.counts.sum()))
    acc = np.nan_to_num(cal.accuracy)
    colours = [(0.12, 0.47, 0.71, 0.25 + 0.75 * min(1.0, 4 * s)) for s in share]
    ax.bar(edges, acc, width=1 / k, align="edge", color=colours, edgecolor="#1f77b4", linewidth=0.4)
    full = cal.counts > 0
    ax.plot(cal.confidence[full], cal.accuracy[full], ".", color="C3", markersize=3)
    ax.plot([0, 1], [0, 1], ":", color="black", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xticks([0, 0.5, 1])
    ax.set_yticks([0, 0.5, 1])
    ax.tick_params(labelsize=6)
    ax.set_title(f"{r.framework}/{r.model}"[:34], fontsize=7)
    ax.text(0.03, 0.93, f"ECE {cal.ece:.2f}%\nover {cal.overconfidence:+.2f} pts", fontsize=6, va="top",
            transform=ax.transAxes)


def plot_reliability(rows: list[RankRow], out: Any) -> None:
    """A reliability diagram per run with top-1 probabilities: bars = accuracy per confidence bin (darker:
    more images), red dots = the bin's mean confidence, dotted y = x; PNG written to ``out``."""
    results = [r.result for r in rows if r.result.calibration is not None]
    cols = min(RELIABILITY_COLUMNS, max(1, len(results)))
    lines = max(1, math.ceil(len(results) / cols))
    fig = _figure(1.9 * cols, 1.9 * lines + 0.4, dpi=80)
    for i, r in enumerate(results):
        ax = fig.add_subplot(lines, cols, i + 1)
        _reliability_panel(ax, r)
        if i % cols == 0:
            ax.set_ylabel("accuracy", fontsize=6)
        if i >= len(results) - cols:
            ax.set_xlabel("confidence", fontsize=6)
    fig.suptitle("Reliability: accuracy per top-1 confidence bin (15 bins); dotted: perfect calibration", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
