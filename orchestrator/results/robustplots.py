"""The robustness plots (matplotlib PNGs, beside results.md and inlined in report.html):

* effective robustness (Taori et al. 2020, "Measuring Robustness to Natural Distribution Shifts"):
  shifted Acc@1 against clean Acc@1 on probit-scaled axes (scipy.stats.norm.ppf; ticks in %), one
  series per shifted set with its linear fit in probit space over that set's paired runs, and y = x;
* mCE per model, one panel per ImageNet-C set (a generated one says it is not comparable).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .robustness import GENERATED_NOTE, CorruptionSet, Robustness

ER_PNG = "effective_robustness.png"
MCE_PNG = "mce.png"
EPS = 1e-4  # probit(0) and probit(1) are infinite: accuracies are clipped to [EPS, 1 - EPS]
TICKS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)  # in %
MARKERS = "os^Dv<>PX*hp"


def probit(p: Any) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS))


def has_pairs(rob: Robustness) -> bool:
    """Whether an effective-robustness plot has a point: a shifted accuracy run with its clean run."""
    return any(r.clean is not None for s in rob.accuracy for r in s.rows)


def has_mce(rob: Robustness) -> bool:
    return any(r.mce is not None for s in rob.corruption for r in s.rows)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _probit_ticks(ax: Any, lo: float, hi: float) -> None:
    """Ticks at round percentages inside [lo, hi] (probit units), no two closer than a 14th of the range."""
    where: list[float] = []
    labels: list[str] = []
    for t in TICKS:
        x = float(probit(t / 100))
        if lo <= x <= hi and (not where or x - where[-1] >= (hi - lo) / 14):
            where.append(x)
            labels.append(f"{t:g}%")
    ax.set_xticks(where, labels)
    ax.set_yticks(where, labels)


def plot_effective_robustness(rob: Robustness, out: Any) -> None:
    """Shifted against clean Acc@1 on probit axes, a fit per set, y = x; PNG written to ``out``."""
    fig, ax = _figure(8.5, 7)
    xs_all: list[float] = []
    for i, s in enumerate(rob.accuracy):
        rows = [r for r in s.rows if r.clean is not None]
        if not rows:
            continue
        x = probit([r.clean.acc1 for r in rows])  # type: ignore[union-attr]
        y = probit([r.acc1 for r in rows])
        xs_all += list(x) + list(y)
        colour = f"C{i % 10}"
        ax.scatter(x, y, color=colour, marker=MARKERS[i % len(MARKERS)], s=36, zorder=3, label=s.eval_set.label)
        for r, px, py in zip(rows, x, y):
            ax.annotate(r.identity.label, (px, py), textcoords="offset points", xytext=(4, 3), fontsize=6)
        if s.fit is not None:
            line = np.linspace(float(x.min()) - 0.2, float(x.max()) + 0.2, 50)
            ax.plot(line, s.fit[0] * line + s.fit[1], color=colour, linestyle="--", linewidth=1,
                    label=f"{s.eval_set.label} fit (probit)")
    lo, hi = (min(xs_all) - 0.3, max(xs_all) + 0.3) if xs_all else (-1.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="black", linestyle=":", linewidth=1, label="y = x (no drop)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _probit_ticks(ax, lo, hi)
    ax.set_xlabel("clean Acc@1 (probit scale)")
    ax.set_ylabel("shifted-set Acc@1 (probit scale)")
    ax.set_title("Effective robustness (Taori et al. 2020): shifted vs clean Acc@1")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, format="png")


def _mce_panel(ax: Any, s: CorruptionSet) -> None:
    rows = [r for r in s.rows if r.mce is not None]
    names = [r.identity.label for r in rows]
    ax.bar(range(len(rows)), [100 * r.mce for r in rows], color="C0", label=s.mce_label)  # type: ignore[operator]
    rel = [100 * r.relative_mce if r.relative_mce is not None else np.nan for r in rows]
    if any(v == v for v in rel):
        ax.scatter(range(len(rows)), rel, color="C3", marker="D", zorder=3, label="relative mCE")
    ax.axhline(100, color="black", linestyle=":", linewidth=1, label="AlexNet = 100")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("%")
    title = f"{s.eval_set.heading}: {s.mce_label} per model (lower is better)"
    ax.set_title(title + (f"\n{GENERATED_NOTE}" if s.eval_set.generated else ""), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def plot_mce(rob: Robustness, out: Any) -> None:
    """A bar of mCE per model (and relative mCE) for each ImageNet-C set; PNG written to ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = [s for s in rob.corruption if any(r.mce is not None for r in s.rows)]
    width = max(6.0, min(16.0, 1.0 + 0.6 * max((len(s.rows) for s in sets), default=1)))
    fig = Figure(figsize=(width, 3.6 * max(1, len(sets))), dpi=110)
    FigureCanvasAgg(fig)
    for i, s in enumerate(sets):
        _mce_panel(fig.add_subplot(len(sets), 1, i + 1), s)
    fig.tight_layout()
    fig.savefig(out, format="png")
