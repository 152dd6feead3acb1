"""``report.html``: one self-contained page (no external URL; CSS, JS and images inline as data: URIs).

Sections: the ranking of the default set (a sortable table; ImageNet val, else the first set), the
Acc@1-vs-throughput plot (the report's PNG), accuracy against GMACs and batch-1 latency with the costs
and the calibration of each run (:mod:`.htmlcosts`), the fidelity of converted runs to their source runs
(:mod:`.htmlfidelity`, when there are some), the ranking of every other evaluation set, the robustness
of the shifted sets (:mod:`.htmlrobust`, when there are some), the environment of every run (what its
run.json and request.json record), the cross-framework agreement matrices of the default set's runs
(:func:`orchestrator.compare.agreement_matrices`) and, for each pair of them of one architecture, the
images they disagree on most (:mod:`.htmlgallery`). Every string from a run is escaped with
:func:`html.escape`.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from zoobench_contract.outputs import RUN_FILE, atomic_write

from ..bench.layout import REQUEST_FILE
from .architectures import ArchitecturesManifest
from .compare import AgreementMatrix, agreement_matrices
from .htmlgallery import MAX_CARDS, PER_PAIR, THUMB_PX, data_roots, gallery_html, images_per_pair
from .htmlparts import dict_of, esc, kv, png_uri, read_json, short
from .htmlcosts import calibration_section, costs_section
from .htmlfidelity import fidelity_section
from .htmlrobust import robustness_section
from .labels import Labels
from .records import RankRow
from .robustness import Robustness
from .tables import HEADERS, caption, headers, is_real, primary, split_groups, text_cells, title

__all__ = ["HTML_FILE", "MAX_CARDS", "PER_PAIR", "THUMB_PX", "data_roots", "images_per_pair", "render_html",
           "write_html_report"]
HTML_FILE = "report.html"
SHOWN_ENV = ("framework", "framework_version", "image_tag", "image_id")  # env keys with a column of their own
NUMERIC = {"Rank@1", "Rank@5", "N", "Acc@1 %", "Acc@1 95% CI", "Acc@5 %", "Acc@5 95% CI", "img/s", "p vs next"}
# Offline by construction: the browser refuses any load that is not an inline style/script or a data: image.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 16px 48px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.random td{color:#999}.small{font-size:12px;color:#555}.note{color:#8a5a00}code{font-size:12px}
.scroll{overflow-x:auto}.env td{font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:156px;border:1px solid #ddd;padding:4px;font-size:11px;background:#fafafa}
figure .thumb{width:148px;height:128px;display:flex;align-items:center;justify-content:center;background:#eee;color:#888}
figure img{max-width:148px;max-height:128px}figcaption{word-wrap:break-word}.ok{color:#070;font-weight:bold}
"""

# Click a header: sort by that column (numbers by data-v, empty cells last), click again: reverse.
JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending", num = th.dataset.type === "num";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var rows = Array.prototype.map.call(body.rows, function (tr) {
        var cell = tr.cells[col], v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
        return {tr: tr, i: +tr.dataset.i, empty: v === "", v: num ? parseFloat(v) : v.toLowerCase()};
      });
      rows.sort(function (a, b) {
        if (a.empty || b.empty) return a.empty === b.empty ? a.i - b.i : (a.empty ? 1 : -1);
        var c = a.v < b.v ? -1 : (a.v > b.v ? 1 : 0);
        return (asc ? c : -c) || a.i - b.i;
      });
      rows.forEach(function (r) { body.appendChild(r.tr); });
    });
  });
});
"""


# ---------------------------------------------------------------- sections

def ranking_section(rows: list[RankRow], anchor: str = "ranking", table_id: str = "ranking-table") -> str:
    names = ["Run"] + headers(rows)
    kinds = ["text"] + ["num" if h in NUMERIC else "text" for h in HEADERS]
    head = "".join(f'<th data-type="{k}">{esc(n)}</th>' for n, k in zip(names, kinds))
    body = []
    for i, row in enumerate(rows):
        r = row.result
        cells = text_cells(row)
        values: list[Any] = [row.rank1, row.rank5, None, None, None, None, r.n, r.acc1, r.ci1[0], r.acc5, r.ci5[0],
                             r.images_per_second, row.p_vs_next]
        tds = [f"<td>{esc(r.run)}</td>"]
        for text, value, kind in zip(cells, values, kinds[1:]):
            if kind == "num":
                v = "" if value is None or value != value else repr(float(value))
                tds.append(f'<td class="num" data-v="{v}">{esc(text)}</td>')
            else:
                tds.append(f"<td>{esc(text)}</td>")
        cls = ' class="random"' if r.weights == "random" else ""
        body.append(f'<tr data-i="{i}"{cls}>{"".join(tds)}</tr>')
    return (f'<h2 id="{anchor}">{esc(title(rows))}</h2>\n<p class="small">Click a column header to sort by it, '
            f'click again to reverse. {esc(caption(rows))}</p>\n<div class="scroll"><table class="sortable" '
            f'id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) +
            "\n</tbody></table></div>")


def plot_section(png: Path | None) -> str:
    uri = png_uri(png)
    if uri is None:
        return '<h2 id="plot">Accuracy vs throughput</h2>\n<p class="note">No plot.</p>'
    return ('<h2 id="plot">Accuracy vs throughput</h2>\n'
            f'<img id="plot-img" src="{uri}" alt="Acc@1 against images per second" style="max-width:100%">')


def other_rankings(groups: list[list[RankRow]]) -> str:
    """A ranking section for each set but the first (ids ``ranking-<set>``, ``ranking-table-<set>``)."""
    out = []
    for g in groups[1:]:
        slug = re.sub(r"[^a-z0-9]+", "-", g[0].result.eval_set.label.lower()).strip("-")
        out.append(ranking_section(g, f"ranking-{slug}", f"ranking-table-{slug}"))
    return "\n".join(out)


def environment_section(rows: list[RankRow]) -> str:
    cols = ["Run", "Set", "Framework", "Image", "Image id", "Weights", "Weights sha256", "Precision", "Device", "Batch",
            "Preprocessing", "Pixels", "Data", "Data digest", "Timings (s)", "Software", "Created"]
    body = []
    for row in rows:
        r = row.result
        run = read_json(r.run_dir / RUN_FILE)
        request = read_json(r.run_dir / REQUEST_FILE)
        req, env, data = dict_of(request, "request"), dict_of(run, "env"), dict_of(run, "data")
        weights = run.get("weights")
        if isinstance(weights, dict):
            wtext = " ".join(str(weights[k]) for k in ("kind", "source") if weights.get(k))
            wsha = weights.get("sha256")
        else:
            wtext, wsha = str(weights or ""), req.get("weights_sha256")
        cache = request.get("pixel_cache")
        if not cache and isinstance(run.get("pixel_cache"), dict):
            cache = run["pixel_cache"].get("folder")
        pixels = f"cache {cache}" if cache else "decoded"
        if run.get("normalise"):
            pixels += f", normalised on {run['normalise']}"
        seconds = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in dict_of(run, "seconds").items()}
        software = {k: v for k, v in env.items() if k not in SHOWN_ENV}
        precision = r.precision + (f" {json.dumps(run['precision_settings'], sort_keys=True)}"
                                   if run.get("precision_settings") else "")
        image = env.get("image_tag") or req.get("image") or ""
        cells = [esc(r.run), esc(r.eval_set.label), esc(r.platform), esc(image), short(env.get("image_id") or req.get("image_id")),
                 esc(wtext), short(wsha), esc(precision), esc(r.device), esc(r.batch_size),
                 kv(run.get("preprocessing")), esc(pixels),
                 esc(" ".join(f"{k} {v}" for k, v in (("root", data.get("root")), ("limit", data.get("limit")))
                              if v not in (None, ""))),
                 short(r.data_digest), kv(seconds), kv(software), esc(run.get("created") or "")]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    return ('<h2 id="environment">Environment of every run</h2>\n<p class="small">As recorded in each run\'s '
            'run.json (and request.json for runs made by <code>zoobench run</code>); '
            'hover a digest for all of it.</p>\n'
            f'<div class="scroll"><table class="env" id="env-table"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(body) + "\n</tbody></table></div>")


def _cell_colour(x: float) -> str:
    """Green for full agreement, through yellow (75 %) to red (50 % and below)."""
    if x != x:
        return ""
    hue = 120 * min(max((x - 0.5) / 0.5, 0.0), 1.0)
    return f' style="background:hsl({hue:.0f},70%,85%)"'


def matrix_section(matrices: list[AgreementMatrix], notes: list[str]) -> str:
    out = ['<h2 id="agreement">Cross-framework agreement</h2>']
    if not matrices:
        out.append('<p class="note">No architecture has runs in two frameworks here '
                   "(manifests/architectures.yaml); no agreement matrix.</p>")
    else:
        out.append('<p class="small">Top-1 agreement % (top-5 overlap %) on the images both runs share; '
                   "the diagonal is the number of images a run has.</p>")
    for m in matrices:
        k = len(m.runs)
        head = "<th>run</th>" + "".join(f"<th>[{j + 1}]</th>" for j in range(k))
        trs = []
        for i in range(k):
            cells = []
            for j in range(k):
                if i == j:
                    cells.append(f'<td class="num small">{m.n_shared[i][i]} images</td>')
                else:
                    shared = "" if m.n_shared[i][j] == m.n_shared[i][i] == m.n_shared[j][j] else \
                        f'<br><span class="small">on {m.n_shared[i][j]}</span>'
                    cells.append(f'<td class="num"{_cell_colour(m.top1[i][j])}>{100 * m.top1[i][j]:.2f} '
                                 f'({100 * m.top5[i][j]:.2f}){shared}</td>')
            trs.append(f"<tr><th>[{i + 1}] {esc(m.runs[i])} <span class=\"small\">{esc(m.platforms[i])}</span></th>"
                       + "".join(cells) + "</tr>")
        out.append(f'<h3>{esc(m.architecture)}</h3>\n<table class="matrix"><thead><tr>{head}</tr></thead><tbody>'
                   + "".join(trs) + "</tbody></table>")
    if notes:
        out.append("<ul class=\"small\">" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(out)


# ---------------------------------------------------------------- page

def render_html(rows: list[RankRow], results_dir: Path, architectures: ArchitecturesManifest, *,
                labels: Labels = None, data: Path | None = None, png: Path | None = None,
                robustness: Robustness | None = None, figures: dict[str, Path] | None = None) -> str:
    """The page of ``rows`` (any number of evaluation sets); ``robustness`` and its ``figures`` (PNG by file
    name) when already made, else they are made here."""
    results_dir = Path(results_dir)
    groups = split_groups(rows)
    main = primary(groups)
    groups = [main] + [g for g in groups if g is not main]
    matrices, notes = agreement_matrices(results_dir, architectures, only={r.result.run for r in main})
    gallery = gallery_html(results_dir, matrices, main, labels, data)
    robust = robustness_section([r.result for r in rows], robustness, figures)
    fidelity = fidelity_section(main, labels)
    first = main[0].result if main else None
    scored = ""
    if first is not None:
        scored = (f"{first.n_images} images, {first.n} with a ReaL label" if is_real(main) else f"{first.n} images")
        scored += f", data digest {first.data_digest}"
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    links = [("ranking", "ranking"), ("plot", "plot"), ("costs", "costs"), ("calibration", "calibration")] + \
        ([("fidelity", "fidelity")] if fidelity else []) + ([("robustness", "robustness")] if robust else []) + \
        [("environment", "environment"), ("agreement", "agreement"), ("gallery", "gallery")]
    nav = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in links)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>zoobench report: {esc(results_dir.name)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>zoobench report: {esc(results_dir.name)}</h1>",
        f'<p class="small">{len(rows)} runs; {esc(scored)}. Generated {esc(generated)}. {nav}</p>',
        ranking_section(main), plot_section(png), costs_section(main, figures), calibration_section(main),
        fidelity, other_rankings(groups), robust, environment_section(rows),
        matrix_section(matrices, notes), gallery, f"<script>{JS}</script>", "</body></html>", ""])


def write_html_report(rows: list[RankRow], results_dir: Path, out_dir: Path, architectures: ArchitecturesManifest, *,
                      labels: Labels = None, data: Path | None = None, png: Path | None = None,
                      robustness: Robustness | None = None, figures: dict[str, Path] | None = None) -> Path:
    """Write ``out_dir/report.html`` atomically; returns its path."""
    page = render_html(rows, results_dir, architectures, labels=labels, data=data, png=png, robustness=robustness,
                       figures=figures)
    path = Path(out_dir) / HTML_FILE
    atomic_write(path, lambda f: f.write(page.encode("utf-8")))
    return path
