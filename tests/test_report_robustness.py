"""report.html's Robustness section on a folder with val, ImageNet-V2, ImageNet-R (+ its clean run) and
ImageNet-C (official and generated) runs: the tables and plots are there, escaped and offline, and in a
real headless Chromium (selenium, as tests/test_report_html.py drives it) both plots load, the rows are
there and sort, and the console stays clean."""
from __future__ import annotations

import io
import json
from html import escape
from pathlib import Path

import pytest
from rich.console import Console

from conftest import zoobench
from orchestrator.paths import MANIFEST_DIR
from orchestrator.results.architectures import load_architectures
from orchestrator.results.htmlreport import HTML_FILE, write_html_report
from orchestrator.results.ranking import run_rank
from orchestrator.results.report import write_reports
from orchestrator.results.robustness import GENERATED_NOTE
from test_report_html import HOSTILE, Page, assert_offline_and_clean, browser, offline, open_page  # noqa: F401
from test_robustness import CORRUPTIONS, GENERATED, W, c_paths, c_right, right_first, val_paths, write

SUBSET = {"name": "imagenet-r", "n": 200, "sha256": "ab" * 32}
MODELS = (("pytorch", "resnet50", 9, 6, 5), ("keras", "resnet50", 8, 7, 6), ("mxnet", HOSTILE, 6, 3, 2))


def robust_folder(root: Path) -> Path:
    """Three models on val, V2, R (one with an imagenet-r-clean run) and C; a generated C run."""
    out = root / "results"
    vp = val_paths(10)
    v2 = sorted(f"{k}/{j}.jpeg" for j, k in enumerate((3, 250, 999, 7, 42) * 2))
    r_paths = sorted(f"{W[i % 3]}/art_{i}.jpg" for i in range(10))
    paths = c_paths()
    for i, (fw, model, clean, shifted, r) in enumerate(MODELS):
        name = f"{fw}-{'hostile' if model == HOSTILE else model}"
        write(out, name, vp, right_first(clean, 10), framework=fw, model=model)
        write(out / "imagenet-v2", name, v2, right_first(shifted, 10), framework=fw, model=model, dataset="imagenet-v2")
        write(out / "imagenet-r", name, r_paths, right_first(r, 10), framework=fw, model=model, dataset="imagenet-r",
              classes=SUBSET)
        k = {(c, s): (j + s + i) % 4 for j, c in enumerate(CORRUPTIONS) for s in range(1, 6)}
        write(out / "imagenet-c", name, paths, c_right(paths, k), framework=fw, model=model, dataset="imagenet-c")
    write(out / "imagenet-r-clean", "pytorch-resnet50", vp[:5], right_first(5, 5), dataset="imagenet-r-clean",
          classes=SUBSET)
    write(out / "imagenet-c-generated", "pytorch-resnet50", paths,
          c_right(paths, {(c, s): 3 for c in CORRUPTIONS for s in range(1, 6)}), dataset="imagenet-c",
          generated=GENERATED)
    return out


def test_report_files_and_robustness_section(tmp_path):
    results = robust_folder(tmp_path)
    rows = run_rank(results, None, "none", Console(file=io.StringIO()))
    out = tmp_path / "out"
    out.mkdir()
    written = write_reports(rows, results, out, None, None, MANIFEST_DIR)
    assert [p.name for p in written] == ["results.md", "acc_vs_speed.png", "effective_robustness.png", "mce.png",
                                         HTML_FILE]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written[1:4])
    md = (out / "results.md").read_text()
    assert "## Robustness" in md and "(effective_robustness.png)" in md and "(mce.png)" in md
    assert "### ImageNet-Rendition ranking (10 images)" in md and HOSTILE not in md
    text = (out / HTML_FILE).read_text(encoding="utf-8")
    offline(text)
    page = Page(text)
    # The report's main ranking is val's; every other set has a ranking of its own.
    assert len(page.tables["ranking-table"]) == 1 + 3
    assert {"ranking-table-imagenet-v2", "ranking-table-imagenet-r", "ranking-table-imagenet-c",
            "ranking-table-imagenet-c-generated", "ranking-table-imagenet-r-clean"} <= set(page.tables)
    robust = page.tables["robustness-table"]
    head = robust[0]
    cells = [dict(zip(head, r)) for r in robust[1:]]
    assert len(cells) == 6 and {c["Set"] for c in cells} == {"imagenet-v2", "imagenet-r"}
    v2 = {c["Model"]: c for c in cells if c["Set"] == "imagenet-v2"}
    assert (v2["pytorch resnet50"]["Clean Acc@1 %"], v2["pytorch resnet50"]["Acc@1 %"],
            v2["pytorch resnet50"]["Drop (points)"]) == ("90.00", "60.00", "30.00")
    assert v2["keras resnet50"]["Change"] == "+1" and v2["pytorch resnet50"]["Change"] == "-1"
    r = {c["Model"]: c for c in cells if c["Set"] == "imagenet-r"}
    assert r["pytorch resnet50"]["Clean set"] == "imagenet-r-clean" and r["keras resnet50"]["Clean Acc@1 %"] == "80.00†"
    mce = [dict(zip(page.tables["mce-table"][0], row)) for row in page.tables["mce-table"][1:]]
    assert len(mce) == 4 and [m["Status"] for m in mce].count(GENERATED_NOTE) == 1
    assert {m["Set"] for m in mce} == {"imagenet-c", "imagenet-c (generated)"}
    assert page.tables["corruption-table-0"][0][1:] == [m["Model"] for m in mce if m["Set"] == "imagenet-c"]
    assert text.count('id="effective-robustness-img" src="data:image/png;base64,') == 1
    assert text.count('id="mce-img" src="data:image/png;base64,') == 1
    # The hostile model name is text everywhere.
    assert HOSTILE not in text and escape(HOSTILE) in text


def test_no_robustness_section_without_shifted_sets(tmp_path):
    results = tmp_path / "results"
    write(results, "pytorch-resnet50", val_paths(4), right_first(3, 4))
    write(results / "imagenet-r-clean", "pytorch-resnet50", val_paths(4), right_first(2, 4),
          dataset="imagenet-r-clean", classes=SUBSET)  # a clean reference is not a shifted set
    rows = run_rank(results, None, "none", Console(file=io.StringIO()))
    text = write_html_report(rows, results, tmp_path, load_architectures()).read_text(encoding="utf-8")
    assert 'id="robustness"' not in text and "robustness-table" not in text and "ranking-table-imagenet-r-clean" in text


@pytest.mark.browser
def test_browser_robustness_section(browser, tmp_path):  # noqa: F811 - the fixture of test_report_html
    results = robust_folder(tmp_path)
    proc = zoobench("report", str(results), timeout=600)
    assert proc.returncode == 0, proc.stderr
    seen = open_page(browser, results / HTML_FILE)
    assert_offline_and_clean(seen)  # no request, no console error, every image decoded
    assert seen["title"] != "pwned"
    sizes = browser.execute_script(
        "return ['plot-img', 'effective-robustness-img', 'mce-img'].map(function (id) {"
        " var i = document.getElementById(id); return i ? [i.complete, i.naturalWidth, i.naturalHeight] : null; })")
    assert all(s is not None and s[0] and s[1] > 0 and s[2] > 0 for s in sizes), sizes
    count = browser.execute_script(
        "return ['robustness-table', 'mce-table'].map(function (id) {"
        " return document.getElementById(id).tBodies[0].rows.length; })")
    assert count == [6, 4]
    column = ("var t = document.getElementById('robustness-table'); var h = Array.from(t.tHead.rows[0].cells)"
              ".findIndex(c => c.textContent.replace(/[\\u25B2\\u25BC]/g, '').trim() === arguments[0]);"
              "return Array.from(t.tBodies[0].rows).map(r => r.cells[h].textContent);")
    browser.execute_script("Array.from(document.querySelectorAll('#robustness-table thead th'))"
                           ".find(th => th.textContent.trim() === 'Drop (points)').click()")
    drops = [float(x) for x in browser.execute_script(column, "Drop (points)")]
    assert drops == sorted(drops) and len(drops) == 6
    models = browser.execute_script(column, "Model")
    assert f"mxnet {HOSTILE}" in models  # shown as text, never run
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert json.loads(zoobench("robustness", str(results), "--format", "json", check=True, timeout=300).stdout)[
        "corruption"][1]["generated"] is True
