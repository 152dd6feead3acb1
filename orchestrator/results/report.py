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
from .costplots import GMACS_PNG, LATENCY_PNG, has_axis, plot_accuracy
from .records import RankRow
from .robustness import Robustness, robustness
from .robustplots import ER_PNG, MCE_PNG, has_mce, has_pairs, plot_effective_robustness, plot_mce
from .robusttables import robustness_markdown
from .tables import format_markdown, is_real, md_escape, primary, split_groups, title

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
    plot = "\n![Acc@1 against images per second](acc_vs_speed.png)\n" + _cost_plots(main) + calibration_markdown(main)
    others = [g for g in groups if g is not main]
    more = "".join(f"\n### {md_escape(title(g))}\n\n" + format_markdown(g) for g in others)
    more = "\n## Other evaluation sets\n" + more if others else ""
    rob = robustness_of(rows) if rob is None else rob
    return "\n".join(head) + "\n" + format_markdown(main) + "".join(tail) + plot + more + _robustness_markdown(rob)


def plot_acc_vs_speed(rows: list[RankRow], path: Any) -> None:
    """Acc@1 (%) against images/s on a log axis; one colour and marker per framework, labelled points,
    the Pareto front marked (:func:`.costplots.plot_accuracy`)."""
    plot_accuracy(rows, path, "ips", is_real(rows))


def _cell(x: float | None, digits: int) -> str:
    return "" if x is None or x != x else f"{x:.{digits}f}"


def calibration_markdown(rows: list[RankRow]) -> str:
    """The calibration table of the rows with top-1 probabilities, most over-confident first ("" without any)."""
    known = sorted((r.result for r in rows if r.result.calibration is not None),
                   key=lambda r: -(r.overconfidence or 0.0))
    if not known:
        return ""
    lines = ["| Framework | Model | Acc@1 % | Mean confidence % | Over-confidence (points) | ECE % | NLL | Brier |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in known:
        cal = r.calibration
        assert cal is not None
        nll = _cell(cal.nll, 4) or cal.why_no_nll
        lines.append(f"| {md_escape(r.platform)} | {md_escape(r.model)} | {100 * r.acc1:.3f} | "
                     f"{100 * cal.mean_confidence:.3f} | {cal.overconfidence:+.3f} | {cal.ece:.3f} | "
                     f"{md_escape(nll)} | {md_escape(_cell(cal.brier, 4))} |")
    return ("\n## Calibration\n\nECE: 15 equal-width bins of the top-1 probability, in %; over-confidence = mean top-1 "
            "probability minus Acc@1 (Guo et al. 2017). NLL and Brier (1000 classes) need the logits "
            "(--save-logits).\n\n" + "\n".join(lines) + "\n")


def _cost_plots(rows: list[RankRow]) -> str:
    plots = [(GMACS_PNG, "Acc@1 against GMACs", "gmacs"), (LATENCY_PNG, "Acc@1 against batch-1 latency", "latency")]
    return "".join(f"\n![{alt}]({name})\n" for name, alt, key in plots if has_axis(rows, key))


def write_report(rows: list[RankRow], out_dir: Path, rob: Robustness | None = None) -> list[Path]:
    """Write ``results.md`` and ``acc_vs_speed.png`` into ``out_dir``, acc_vs_gmacs.png / acc_vs_latency.png
    when some run has GMACs / a batch-1 latency, and the robustness plots when the rows hold shifted sets;
    returns their paths (results.md, acc_vs_speed.png first)."""
    out_dir = Path(out_dir)
    rob = robustness_of(rows) if rob is None else rob
    md, png = out_dir / "results.md", out_dir / "acc_vs_speed.png"
    atomic_write(md, lambda f: f.write(markdown_report(rows, rob).encode("utf-8")))
    atomic_write(png, lambda f: plot_acc_vs_speed(primary(split_groups(rows)), f))
    written = [md, png]
    main = primary(split_groups(rows))
    for name, key in ((GMACS_PNG, "gmacs"), (LATENCY_PNG, "latency")):
        if has_axis(main, key):
            atomic_write(out_dir / name, lambda f, key=key: plot_accuracy(main, f, key, is_real(main)))
            written.append(out_dir / name)
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
