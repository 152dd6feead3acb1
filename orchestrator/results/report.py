"""Write a ranking as results.md and a plot of Acc@1 against throughput (acc_vs_speed.png); with runs of
shifted sets also their robustness (:mod:`.robustness`) and its plots (effective_robustness.png, mce.png).

results.md and the plot rank the default set (ImageNet val; else the first set); every other set's
ranking follows in its own table. Every name or value from a run's files is escaped in results.md
(:func:`~orchestrator.results.tables.md_escape`): a model named ``x|<b>`` is shown as text, never as markup."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoobench_contract.outputs import atomic_write

from ..errors import BenchError
from .records import RankRow
from .robustness import Robustness, robustness
from .robustplots import ER_PNG, MCE_PNG, has_mce, has_pairs, plot_effective_robustness, plot_mce
from .robusttables import robustness_markdown
from .tables import format_markdown, is_real, md_escape, primary, split_groups, title

MARKERS = "os^Dv<>PX*hp"


def robustness_of(rows: list[RankRow]) -> Robustness:
    """The robustness of the shifted sets among ``rows`` (empty when there is none)."""
    return robustness([r.result for r in rows])


def _robustness_markdown(rob: Robustness) -> str:
    if rob.empty:
        return ""
    plots = ([f"![Effective robustness: shifted vs clean Acc@1, probit axes]({ER_PNG})"] if has_pairs(rob) else []) \
        + ([f"![mCE per model]({MCE_PNG})"] if has_mce(rob) else [])
    return "\n## Robustness\n\n" + robustness_markdown(rob) + "".join(f"\n{p}\n" for p in plots)


def markdown_report(rows: list[RankRow], rob: Robustness | None = None) -> str:
    groups = split_groups(rows)
    main = primary(groups)
    first = main[0].result if main else None
    head = ["# zoobench results", ""]
    if first is not None:
        scored = (f"{first.n_images} images, {first.n} with a ReaL label and scored against the ReaL labels"
                  if is_real(main) else f"{first.n} images")
        head += [f"{scored}, data digest {md_escape(first.data_digest)}.", ""]
    unmeasured = [r.result.run for r in main if r.result.images_per_second is None]
    tail = ([f"\nNo throughput recorded for: {', '.join(map(md_escape, unmeasured))} (left out of the plot).\n"]
            if unmeasured else [])
    plot = "\n![Acc@1 against images per second](acc_vs_speed.png)\n"
    others = [g for g in groups if g is not main]
    more = "".join(f"\n### {md_escape(title(g))}\n\n" + format_markdown(g) for g in others)
    more = "\n## Other evaluation sets\n" + more if others else ""
    rob = robustness_of(rows) if rob is None else rob
    return "\n".join(head) + "\n" + format_markdown(main) + "".join(tail) + plot + more + _robustness_markdown(rob)


def plot_acc_vs_speed(rows: list[RankRow], path: Any) -> None:
    """Acc@1 (%) against images/s on a log axis; one colour and marker per framework, labelled points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = [r.result for r in rows if r.result.images_per_second is not None]
    frameworks = sorted({r.platform for r in points})
    colours = [f"C{i % 10}" for i in range(len(frameworks))]
    for i, fw in enumerate(frameworks):
        mine = [r for r in points if r.platform == fw]
        ax.scatter([r.images_per_second for r in mine], [100 * r.acc1 for r in mine], label=fw,
                   color=colours[i], marker=MARKERS[i % len(MARKERS)], s=40, zorder=3)
        for r in mine:
            ax.annotate(r.model + (" (random)" if r.weights == "random" else ""),
                        (r.images_per_second, 100 * r.acc1), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if points:
        ax.set_xscale("log")
        ax.legend(title="framework", fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no throughput recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("images / second (end to end, log scale)")
    ax.set_ylabel("ReaL Acc@1 (%)" if is_real(rows) else "Acc@1 (%)")
    n = rows[0].result.n if rows else 0
    name = "" if not rows or rows[0].result.eval_set.default else f"{rows[0].result.eval_set.heading}, "
    ax.set_title(f"Accuracy vs throughput ({name}{n} images{', ReaL labels' if is_real(rows) else ''})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(rows: list[RankRow], out_dir: Path, rob: Robustness | None = None) -> list[Path]:
    """Write ``results.md`` and ``acc_vs_speed.png`` into ``out_dir``, and the robustness plots when the
    rows hold shifted sets; returns their paths (results.md, acc_vs_speed.png first)."""
    out_dir = Path(out_dir)
    rob = robustness_of(rows) if rob is None else rob
    md, png = out_dir / "results.md", out_dir / "acc_vs_speed.png"
    atomic_write(md, lambda f: f.write(markdown_report(rows, rob).encode("utf-8")))
    atomic_write(png, lambda f: plot_acc_vs_speed(primary(split_groups(rows)), f))
    written = [md, png]
    for name, wanted, plot in ((ER_PNG, has_pairs(rob), plot_effective_robustness), (MCE_PNG, has_mce(rob), plot_mce)):
        if wanted:
            atomic_write(out_dir / name, lambda f, plot=plot: plot(rob, f))
            written.append(out_dir / name)
    return written


def write_reports(rows: list[Any], results_dir: Path, out_dir: Path, labels: Any, data: Path | None,
                  manifests: Path) -> list[Path]:
    """results.md, acc_vs_speed.png (and the robustness plots) and report.html of ranked ``rows`` (any
    number of evaluation sets) into ``out_dir``; report.html is last."""
    from .architectures import ARCHITECTURES_FILE, load_architectures
    from .htmlreport import data_roots, write_html_report

    architectures = load_architectures(manifests / ARCHITECTURES_FILE)
    data_roots(primary(split_groups(rows)), data)  # a bad --data is one line before anything is written
    rob = robustness_of(rows)
    try:
        written = write_report(rows, out_dir, rob)
        figures = {p.name: p for p in written[2:]}
        written.append(write_html_report(rows, results_dir, out_dir, architectures, labels=labels, data=data,
                                         png=written[1], robustness=rob, figures=figures))
    except OSError as exc:
        raise BenchError(f"report folder {out_dir}: cannot write {Path(exc.filename or out_dir).name} "
                         f"({exc.strerror or exc}); pass a writable folder with --out") from None
    return written
