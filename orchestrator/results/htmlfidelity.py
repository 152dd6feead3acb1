"""The "Conversion fidelity" section of report.html (``id="fidelity"``, table ``id="fidelity-table"``): each
converted run of the default set against its source run (:mod:`.fidelity`); empty when no run was converted."""
from __future__ import annotations

from .fidelity import MLPERF_FRACTION, fidelity_rows
from .htmlparts import Cell, esc, sortable_table
from .labels import Labels
from .records import RankRow
from .tables import fmt_p

HEADERS = ["Converted run", "Runtime", "Source run", "Exporter", "Images", "Top-1 agreement %", "Acc@1 source %",
           "Acc@1 converted %", "Difference (points)", "McNemar p", "Max |logit diff| (probe)", "Within MLPerf 99 %"]
NUMERIC = [False] * 4 + [True] * 7 + [False]


def fidelity_section(rows: list[RankRow], labels: Labels = None) -> str:
    """The table, or "" when none of ``rows`` is a converted run with its source run beside it."""
    results = [r.result for r in rows]
    found = fidelity_rows(results, labels)
    if not found:
        return ""
    platform = {r.run: r.platform for r in results}
    table: list[list[Cell]] = []
    for f in found:
        c = f.comparison
        diff = f.max_abs_logit_diff
        table.append([(f.converted, None), (platform.get(f.converted, ""), None), (f.source, None), (f.exporter, None),
                      (str(c.n_shared), c.n_shared), (f"{100 * c.top1_agreement:.2f}", c.top1_agreement),
                      (f"{100 * c.acc1_a:.2f}", c.acc1_a), (f"{100 * c.acc1_b:.2f}", c.acc1_b),
                      (f"{f.acc1_diff_points:+.2f}", f.acc1_diff_points), (fmt_p(c.p_mcnemar), c.p_mcnemar),
                      ("n/a" if diff is None else f"{diff:.2e}", diff), ("yes" if f.within_mlperf else "NO", None)])
    return "\n".join([
        '<h2 id="fidelity">Conversion fidelity</h2>',
        '<p class="small">Each model a deployment runtime served from a conversion (<code>zoobench convert</code>) '
        "against the run of its source image on the same images: top-1 agreement, Acc@1 difference with the exact "
        "McNemar p-value, the largest |logit difference| on the conversion's fixed probe batch, and whether the "
        f"converted Acc@1 is at least {esc(f'{100 * MLPERF_FRACTION:g}')} % of the source's (MLPerf Inference's "
        "accuracy target). Click a header to sort.</p>",
        sortable_table("fidelity-table", HEADERS, NUMERIC, table)])
