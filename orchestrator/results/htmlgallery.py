"""The disagreement gallery of report.html: for each pair of runs of one architecture, the images they
disagree on most (:func:`orchestrator.compare.compare_runs`) as thumbnails read from the data folder
(``--data``, else the folder a run recorded in run.json), every string escaped."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from zoobench_contract.outputs import RUN_FILE

from ..errors import RankError
from .compare import AgreementMatrix, Comparison, compare_runs, load_run
from .htmlparts import esc, read_json
from .labels import Labels
from .records import RankRow

THUMB_PX = 128  # longest side of a gallery thumbnail
PER_PAIR = 8  # disagreeing images shown per pair of runs
MAX_CARDS = 240  # gallery cards in one report (fewer per pair when there are many pairs): a page stays a few MB


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
        root = (read_json(row.result.run_dir / RUN_FILE).get("data") or {}).get("root")
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


def gallery_html(results_dir: Path, matrices: list[AgreementMatrix], rows: list[RankRow], labels: Labels,
                 data: Path | None) -> str:
    """The gallery section of the pairs of ``matrices``, with a note naming the images it could not show."""
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
    return gallery
