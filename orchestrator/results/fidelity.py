"""Conversion fidelity: how far a converted model's run (a runtime image serving ``SOURCE.MODEL``) is from
its source run on the same images: top-1 agreement, Acc@1 difference with the exact McNemar p-value, the
max |logit difference| on the conversion's fixed probe batch (run.json ``converted.probe``), and whether
the converted Acc@1 is within MLPerf's 99 % of the source's (MLPerf Inference's closed-division rule)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from .compare import Comparison, compare_runs, load_run, read_run
from .labels import Labels
from .provenance import conversion_of, source_run_name
from .records import ModelResult
from .tables import fmt_p

MLPERF_FRACTION = 0.99  # a runtime must keep 99 % of the FP32 reference's accuracy


@dataclass
class Fidelity:
    """One converted run against its source run (``comparison``: A = source, B = converted)."""

    converted: str
    source: str
    comparison: Comparison
    max_abs_logit_diff: float | None
    probe_batch: int | None
    exporter: str
    key = "fidelity"  # its section in `zoobench compare --format json`

    @property
    def acc1_diff_points(self) -> float:
        """Converted minus source Acc@1, percentage points."""
        return 100 * (self.comparison.acc1_b - self.comparison.acc1_a)

    @property
    def within_mlperf(self) -> bool:
        return self.comparison.acc1_b >= MLPERF_FRACTION * self.comparison.acc1_a

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {"converted": self.converted, "source": self.source, "converted_label": c.b_label,
                "source_label": c.a_label, "n_shared": c.n_shared, "top1_agreement": c.top1_agreement,
                "acc1_source": c.acc1_a, "acc1_converted": c.acc1_b, "acc1_diff_points": self.acc1_diff_points,
                "p_mcnemar": c.p_mcnemar, "within_mlperf_99": self.within_mlperf,
                "max_abs_logit_diff": self.max_abs_logit_diff, "probe_batch": self.probe_batch,
                "exporter": self.exporter}

    def table(self) -> Table:
        """The fidelity section of `zoobench compare` (A: the source run, B: its conversion)."""
        t = Table(title=f"conversion fidelity: {self.converted} from {self.source}", box=box.SIMPLE_HEAD,
                  show_header=False)
        t.add_column("what", no_wrap=True)
        t.add_column("value", overflow="fold")
        for what, value in fidelity_cells(self).items():
            t.add_row(what, value)
        return t


def fidelity_cells(f: Fidelity) -> dict[str, str]:
    """The figures of one fidelity row as text (the compare section, the report's table)."""
    c = f.comparison
    diff = "n/a" if f.max_abs_logit_diff is None else f"{f.max_abs_logit_diff:.2e}"
    return {"exporter": f.exporter, "images": str(c.n_shared), "top-1 agreement": f"{100 * c.top1_agreement:.2f} %",
            "Acc@1 source / converted": f"{100 * c.acc1_a:.2f} / {100 * c.acc1_b:.2f} %",
            "Acc@1 difference": f"{f.acc1_diff_points:+.2f} points (McNemar p {fmt_p(c.p_mcnemar)})",
            f"max |logit diff| (probe batch {f.probe_batch or '?'})": diff,
            "within MLPerf 99 %": "yes" if f.within_mlperf else "NO"}


def fidelity_of(source_dir: Path, converted_dir: Path, labels: Labels = None) -> Fidelity:
    """Compare the converted run in ``converted_dir`` with its source run in ``source_dir``."""
    run = read_run(converted_dir)
    comparison = compare_runs(load_run(source_dir, source_dir.name), load_run(converted_dir, converted_dir.name, run),
                              labels)
    conv = conversion_of(run) or {}
    probe = conv.get("probe") if isinstance(conv.get("probe"), dict) else {}
    exporter = conv.get("exporter") if isinstance(conv.get("exporter"), dict) else {}
    diff = probe.get("max_abs_logit_diff")
    return Fidelity(converted_dir.name, source_dir.name, comparison, float(diff) if diff is not None else None,
                    probe.get("batch"), f"{exporter.get('name', '?')} {exporter.get('version', '')}".strip())


def fidelity_rows(results: list[ModelResult], labels: Labels = None) -> list[Fidelity]:
    """Every converted run of ``results`` whose source run is there too (same folder, same evaluation set)."""
    by_dir = {r.run_dir.parent / r.run: r for r in results}
    rows = []
    for r in results:
        run = read_run(r.run_dir)
        name = source_run_name(run)
        source = by_dir.get(r.run_dir.parent / name) if name else None
        if source is not None and source.eval_set.key == r.eval_set.key:
            rows.append(fidelity_of(source.run_dir, r.run_dir, labels))
    return rows


def pair_fidelity(dir_a: Path, dir_b: Path, labels: Labels = None) -> Fidelity | None:
    """``zoobench compare A B``: the fidelity when one run is the other's conversion (either order)."""
    for source, converted in ((dir_a, dir_b), (dir_b, dir_a)):
        conv = conversion_of(read_run(converted))
        if conv is not None and source_run_name(read_run(converted)) == source.name:
            return fidelity_of(source, converted, labels)
    return None
