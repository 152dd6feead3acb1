"""``report.html``: one self-contained page (no external URL; CSS, JS and images inline as data: URIs).

Sections: the ranking (a sortable table), the Acc@1-vs-throughput plot (the report's PNG), the
environment of every run (what its run.json and request.json record), the cross-framework agreement
matrices (:func:`orchestrator.compare.agreement_matrices`) and, for each pair of runs of one
architecture, the images they disagree on most (:func:`orchestrator.compare.compare_runs`) as
thumbnails read from the data folder (``--data``, else the folder a run recorded in run.json).
Every string from a run is escaped with :func:`html.escape`.
"""
from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any

from zoobench_contract.outputs import RUN_FILE, atomic_write

from ..bench.layout import REQUEST_FILE
from ..errors import RankError
from .architectures import ArchitecturesManifest
from .compare import AgreementMatrix, Comparison, agreement_matrices, compare_runs, load_run
from .labels import Labels
from .records import RankRow
from .tables import HEADERS, caption, headers, is_real, text_cells, title

HTML_FILE = "report.html"
THUMB_PX = 128  # longest side of a gallery thumbnail
PER_PAIR = 8  # disagreeing images shown per pair of runs
MAX_CARDS = 240  # gallery cards in one report (fewer per pair when there are many pairs): a page stays a few MB
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


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _short(value: Any, n: int = 12) -> str:
    """``sha256:0123...`` cut to ``n`` hex digits, the full value in a tooltip (escaped)."""
    if not value:
        return ""
    text = str(value)
    algo, _, digest = text.rpartition(":")
    shown = (f"{algo}:" if algo else "") + digest[:n] + ("…" if len(digest) > n else "")
    return f'<code title="{esc(text)}">{esc(shown)}</code>'


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _dict(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def _kv(d: Any) -> str:
    """A dict as ``key value`` lines (values JSON when not plain), escaped."""
    if not isinstance(d, dict) or not d:
        return ""
    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return "<br>".join(f"{esc(k)} <code>{esc(text(v))}</code>" for k, v in d.items() if v not in (None, "", [], {}))


# ---------------------------------------------------------------- sections

def ranking_section(rows: list[RankRow]) -> str:
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
    return (f'<h2 id="ranking">{esc(title(rows))}</h2>\n<p class="small">Click a column header to sort by it, '
            f'click again to reverse. {esc(caption(rows))}</p>\n<div class="scroll"><table class="sortable" '
            f'id="ranking-table"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) +
            "\n</tbody></table></div>")


def plot_section(png: Path | None) -> str:
    if png is None or not Path(png).is_file():
        return '<h2 id="plot">Accuracy vs throughput</h2>\n<p class="note">No plot.</p>'
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return ('<h2 id="plot">Accuracy vs throughput</h2>\n'
            f'<img id="plot-img" src="data:image/png;base64,{data}" alt="Acc@1 against images per second" '
            'style="max-width:100%">')


def environment_section(rows: list[RankRow]) -> str:
    cols = ["Run", "Framework", "Image", "Image id", "Weights", "Weights sha256", "Precision", "Device", "Batch",
            "Preprocessing", "Pixels", "Data", "Data digest", "Timings (s)", "Software", "Created"]
    body = []
    for row in rows:
        r = row.result
        run = _read_json(r.run_dir / RUN_FILE)
        request = _read_json(r.run_dir / REQUEST_FILE)
        req, env, data = _dict(request, "request"), _dict(run, "env"), _dict(run, "data")
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
        seconds = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in _dict(run, "seconds").items()}
        software = {k: v for k, v in env.items() if k not in SHOWN_ENV}
        precision = r.precision + (f" {json.dumps(run['precision_settings'], sort_keys=True)}"
                                   if run.get("precision_settings") else "")
        image = env.get("image_tag") or req.get("image") or ""
        cells = [esc(r.run), esc(r.platform), esc(image), _short(env.get("image_id") or req.get("image_id")),
                 esc(wtext), _short(wsha), esc(precision), esc(r.device), esc(r.batch_size),
                 _kv(run.get("preprocessing")), esc(pixels),
                 esc(" ".join(f"{k} {v}" for k, v in (("root", data.get("root")), ("limit", data.get("limit")))
                              if v not in (None, ""))),
                 _short(r.data_digest), _kv(seconds), _kv(software), esc(run.get("created") or "")]
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


# ---------------------------------------------------------------- gallery

@dataclass
class Thumbnails:
    """Thumbnails (data: URIs) of prediction paths, read below the first of ``roots`` holding the file."""

    roots: list[Path]
    cache: dict[str, str | None] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def get(self, rel: str) -> str | None:
        if rel not in self.cache:
            self.cache[rel] = self._make(rel)
            if self.cache[rel] is None and self.roots:
                self.missing.append(rel)
        return self.cache[rel]

    def _make(self, rel: str) -> str | None:
        parts = PurePosixPath(rel.replace("\\", "/"))
        if parts.is_absolute() or ".." in parts.parts:
            return None
        for root in self.roots:
            path = root.joinpath(*parts.parts)
            if path.is_file():
                return thumbnail(path)
        return None


def thumbnail(path: Path, px: int = THUMB_PX) -> str | None:
    """A JPEG of ``path`` no larger than ``px`` x ``px`` as a data: URI; None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, much faster for large files
            small = im.convert("RGB")
            small.thumbnail((px, px))
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an unreadable image is a missing thumbnail, never a failed report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def data_roots(rows: list[RankRow], data: Path | None) -> tuple[list[Path], str | None]:
    """Where the images are: ``data`` when given, else the data folders the runs recorded (run.json
    ``data.root``) that exist here. Returns (folders, a note when there is none)."""
    if data is not None:
        if not Path(data).is_dir():
            raise RankError(f"--data {data}: not a folder; pass the data folder the runs were made on")
        return [Path(data)], None
    recorded: list[str] = []
    for row in rows:
        root = (_read_json(row.result.run_dir / RUN_FILE).get("data") or {}).get("root")
        if isinstance(root, str) and root and root not in recorded:
            recorded.append(root)
    found = [Path(r) for r in recorded if Path(r).is_absolute() and Path(r).is_dir()]
    if found:
        return found, None
    where = f"the data folder the runs recorded ({', '.join(recorded[:2])}) is not on this host" if recorded \
        else "the runs record no data folder"
    return [], f"No thumbnails: {where}; pass --data DIR (the folder the runs were made on) to show the images."


def images_per_pair(matrices: list[AgreementMatrix]) -> int:
    """:data:`PER_PAIR`, or fewer when all pairs would show more than :data:`MAX_CARDS` (at least one)."""
    n_pairs = sum(len(m.runs) * (len(m.runs) - 1) // 2 for m in matrices)
    return max(1, min(PER_PAIR, MAX_CARDS // max(1, n_pairs)))


def pair_comparisons(results_dir: Path, matrices: list[AgreementMatrix], labels: Labels,
                     per_pair: int = PER_PAIR) -> list[tuple[str, Comparison]]:
    """(architecture, comparison) for each pair of runs of one architecture, ``per_pair`` images each."""
    out = []
    for m in matrices:
        runs = [load_run(results_dir / name, name) for name in m.runs]
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                try:
                    out.append((m.architecture, compare_runs(runs[i], runs[j], labels, top=per_pair)))
                except RankError:  # no shared image: nothing to show for this pair
                    continue
    return out


def gallery_section(pairs: list[tuple[str, Comparison]], thumbs: Thumbnails, note: str | None,
                    per_pair: int = PER_PAIR) -> str:
    from zoobench_contract.imagenet import class_names

    names = class_names()
    out = ['<h2 id="gallery">Where same-architecture runs disagree most</h2>']
    if not pairs:
        out.append('<p class="note">No pair of runs of one architecture; no gallery.</p>')
        return "\n".join(out)
    out.append(f'<p class="small">For each pair, up to {per_pair} images whose top-1 classes differ, where the sum '
               "of both top-1 scores is highest (both runs most sure of different classes). "
               '<span class="ok">&#10003;</span> = right.</p>')
    if note:
        out.append(f'<p class="note" id="gallery-note">{esc(note)}</p>')
    for arch, c in pairs:
        differ = c.n_shared - int(round(c.top1_agreement * c.n_shared))
        out.append(f'<h3>{esc(arch)}: {esc(c.a)} vs {esc(c.b)}</h3>\n<p class="small">A = {esc(c.a_label)}, '
                   f"B = {esc(c.b_label)}: top-1 agreement {100 * c.top1_agreement:.2f} % on {c.n_shared} images, "
                   f"{differ} disagree; Acc@1 {100 * c.acc1_a:.2f} / {100 * c.acc1_b:.2f} %.</p>")
        if not c.disagreements:
            out.append('<p class="small">They agree on every shared image.</p>')
            continue
        figs = []
        for d in c.disagreements:
            src = thumbs.get(d.path)
            img = (f'<img src="{src}" alt="{esc(d.path)}">' if src else '<span>no image</span>')
            truth = ", ".join(names[t] for t in d.truth) or ("(no ReaL label)" if c.labels == "real" else "(none)")

            def line(who: str, cls: int, score: float | None) -> str:
                mark = ' <span class="ok">&#10003;</span>' if cls in d.truth else ""
                s = "" if score is None else f" ({score:.3f})"
                return f"<b>{who}</b> {esc(names[cls])}{esc(s)}{mark}"

            figs.append(f'<figure><div class="thumb">{img}</div><figcaption>{line("A", d.top1_a, d.score_a)}<br>'
                        f'{line("B", d.top1_b, d.score_b)}<br><b>true</b> {esc(truth)}<br>'
                        f'<span class="small">{esc(d.path)}</span></figcaption></figure>')
        out.append('<div class="gallery">' + "".join(figs) + "</div>")
    return "\n".join(out)


# ---------------------------------------------------------------- page

def render_html(rows: list[RankRow], results_dir: Path, architectures: ArchitecturesManifest, *,
                labels: Labels = None, data: Path | None = None, png: Path | None = None) -> str:
    results_dir = Path(results_dir)
    matrices, notes = agreement_matrices(results_dir, architectures)
    per_pair = images_per_pair(matrices)
    pairs = pair_comparisons(results_dir, matrices, labels, per_pair)
    roots, note = data_roots(rows, data)
    thumbs = Thumbnails(roots)
    gallery = gallery_section(pairs, thumbs, note, per_pair)  # fills thumbs.missing
    if thumbs.missing:
        where = ", ".join(str(r) for r in roots)
        gallery = gallery.replace(
            "</h2>", f'</h2>\n<p class="note" id="gallery-missing">{len(thumbs.missing)} image(s) not found or '
            f"unreadable under {esc(where)} (first: {esc(thumbs.missing[0])}); pass --data DIR (the folder the "
            "runs were made on).</p>", 1)
    first = rows[0].result if rows else None
    scored = ""
    if first is not None:
        scored = (f"{first.n_images} images, {first.n} with a ReaL label" if is_real(rows) else f"{first.n} images")
        scored += f", data digest {first.data_digest}"
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nav = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in (("ranking", "ranking"), ("plot", "plot"),
                                                              ("environment", "environment"),
                                                              ("agreement", "agreement"), ("gallery", "gallery")))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>zoobench report: {esc(results_dir.name)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>zoobench report: {esc(results_dir.name)}</h1>",
        f'<p class="small">{len(rows)} runs; {esc(scored)}. Generated {esc(generated)}. {nav}</p>',
        ranking_section(rows), plot_section(png), environment_section(rows), matrix_section(matrices, notes),
        gallery, f"<script>{JS}</script>", "</body></html>", ""])


def write_html_report(rows: list[RankRow], results_dir: Path, out_dir: Path, architectures: ArchitecturesManifest, *,
                      labels: Labels = None, data: Path | None = None, png: Path | None = None) -> Path:
    """Write ``out_dir/report.html`` atomically; returns its path."""
    page = render_html(rows, results_dir, architectures, labels=labels, data=data, png=png)
    path = Path(out_dir) / HTML_FILE
    atomic_write(path, lambda f: f.write(page.encode("utf-8")))
    return path
