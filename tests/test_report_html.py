"""`zoobench report` writes report.html: one self-contained page (ranking, plot, environments, agreement
matrices, disagreement gallery). Checked as HTML here, and in a real headless Chromium (selenium) on the
published Keras/PyTorch predictions and on a tiny synthetic folder whose data folder holds real JPEGs."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from conftest import IN_CI, one_line_error, require, zoobench
from orchestrator.results.architectures import ArchitecturesManifest, load_architectures
from orchestrator.results.htmlreport import HTML_FILE, THUMB_PX, write_html_report
from orchestrator.results.ranking import run_rank
from orchestrator.results.tables import pct
from test_northcutt import convert
from zoobench_contract.imagenet import class_names, wnids

W = wnids()
NAMES = class_names()
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">&'
SUBSET = {"keras-resnet50", "pytorch-resnet50", "keras-densenet121", "pytorch-densenet121", "pytorch-alexnet",
          "keras-nasnetlarge"}


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def published_subset(northcutt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("northcutt_html") / "results"
    yield convert(northcutt_dir, out, flat=False, only=SUBSET)
    shutil.rmtree(out, ignore_errors=True)


def synthetic(root: Path, n: int = 6, data: bool = True) -> tuple[Path, Path]:
    """(results, data): ``n`` small JPEGs in synset folders and three resnet50 runs (PyTorch, Keras,
    MXNet) as `zoobench run` writes them (run.json with env/weights/data.root + request.json)."""
    data_dir, results = root / "val", root / "results"
    paths = [f"{W[i]}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)]
    if data:
        for i, rel in enumerate(paths):
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            img = Image.new("RGB", (200 + 20 * i, 150), (40 * i % 256, 120, 255 - 30 * i))
            img.paste((255, 255, 255), (10, 10, 60, 60))
            img.save(data_dir / rel, format="JPEG")
    digest = "sha256:" + "ab" * 32
    runs = {  # name: (framework, model, top-1 per image, score, images/s)
        "pytorch-resnet50": ("pytorch", "resnet50", list(range(n)), 0.9, 310.5),
        "keras-resnet50": ("keras", "resnet50", [0, 1, 2, 500, 501, 5][:n], 0.8, 120.25),
        "mxnet-resnet50_v1": ("mxnet", "resnet50_v1", [0, 1, 700, 3, 702, 5][:n], 0.7, 95.0),
    }
    for name, (fw, model, top1, score, ips) in runs.items():
        d = results / name
        d.mkdir(parents=True)
        topk = (np.array(top1)[:, None] + np.arange(5)) % 1000
        scores = np.array([[score - 0.01 * i, 0.05, 0.02, 0.01, 0.005] for i in range(n)], np.float32)
        np.savez(d / "predictions.npz", paths=np.array(paths, dtype=np.str_), topk_indices=topk.astype(np.int64),
                 topk_scores=scores)
        image_id = "sha256:" + ("1" if fw == "pytorch" else "2") * 64
        run = {"schema_version": 1, "status": "ok", "framework": fw, "framework_version": "9.9<b>",
               "model": model, "weights": {"kind": "imagenet", "requested": "imagenet", "source": HOSTILE,
                                           "file": "/weights/x", "sha256": "cd" * 32},
               "preprocessing": {"resize_size": 256, "crop_size": 224, "interpolation": "bilinear"},
               "precision": "fp32", "precision_settings": {"tf32": False}, "normalise": "device",
               "pixel_cache": None, "device": "cpu", "batch_size": 32, "topk": 5, "n_images": n,
               "images_per_second": ips, "seconds": {"load": 1.234, "inference": 0.5},
               "data": {"root": str(data_dir.resolve()), "n_images": n, "limit": None, "digest": digest},
               "env": {"framework": fw, "framework_version": "9.9<b>", "python": "3.11.7", "numpy": "2.4.0",
                       "pillow": "12.0.0", "image_tag": f"zoobench/{fw}:cpu-abc", "image_id": image_id},
               "created": "2026-01-01T00:00:00Z"}
        (d / "run.json").write_text(json.dumps(run))
        request = {"request": {"image": fw, "model": model, "image_id": image_id, "weights": "imagenet",
                               "weights_sha256": None, "preprocess": {}, "precision": "fp32", "limit": None,
                               "data_digest": digest}, "sha256": {}, "pixel_cache": None}
        (d / "request.json").write_text(json.dumps(request))
    return results, data_dir


class Page(HTMLParser):
    """The bits of report.html the tests look at: table cells by table id, img srcs, external refs."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.imgs: list[str] = []
        self.refs: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "action", "data", "poster"):
            if a.get(key) is not None:
                self.refs.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def offline(text: str) -> None:
    page = Page(text)
    external = [r[:60] for r in page.refs if not r.startswith(("data:", "#"))]
    assert not external, external
    assert not re.search(r"url\(|@import|https?://", text.replace("http-equiv", "")), "external reference in the page"


# ---------------------------------------------------------------- HTML, no browser

def test_published_34_runs_fast_and_small(northcutt_dir, tmp_path):
    results = convert(northcutt_dir, tmp_path / "results", flat=False)
    try:
        started = time.perf_counter()
        proc = zoobench("report", str(results), "--out", str(tmp_path / "out"), timeout=600)
        elapsed = time.perf_counter() - started
        assert proc.returncode == 0, proc.stderr
        html_path = tmp_path / "out" / HTML_FILE
        assert proc.stdout.split() == [str(tmp_path / "out" / n) for n in ("results.md", "acc_vs_speed.png", HTML_FILE)]
        text = html_path.read_text(encoding="utf-8")
        page = Page(text)
        rows = page.tables["ranking-table"][1:]
        assert len(rows) == 34 and rows[0][4] == "nasnetlarge" and rows[0][8] == "80.826"
        assert len(page.tables["env-table"]) == 35
        assert text.count('<table class="matrix"') == 7  # resnet50, densenet121/169/201, vgg16/19, inception_v3
        assert text.count("<figure>") == 7 * 8 and "pass --data DIR" in text
        assert "data:image/png;base64," in text
        offline(text)
        # Figures for the record (printed with -s); the size bound keeps the page quick to open.
        print(f"\nreport of 34 x 50,000: report.html {html_path.stat().st_size / 1e3:.0f} kB, "
              f"zoobench report {elapsed:.1f} s")
        assert html_path.stat().st_size < 2_000_000
        assert not list((tmp_path / "out").glob(".report.*"))  # atomic: no temp file left
    finally:
        shutil.rmtree(results, ignore_errors=True)


def test_synthetic_thumbnails_environment_and_escaping(tmp_path):
    results, data_dir = synthetic(tmp_path)
    rows = run_rank(results, None, "none", Console(file=io.StringIO()))
    path = write_html_report(rows, results, tmp_path / "out", load_architectures())
    text = path.read_text(encoding="utf-8")
    offline(text)
    page = Page(text)
    # Three pairs of one architecture; keras and mxnet disagree with pytorch on 2 images each, with each other on 3.
    assert text.count("<figure>") == 2 + 2 + 3
    thumbs = [s for s in page.imgs if s.startswith("data:image/jpeg;base64,")]
    assert len(thumbs) == 7
    for src in thumbs:
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.format == "JPEG" and max(im.size) <= THUMB_PX
    assert "pass --data" not in text
    # Both predictions (names, scores) and the true label.
    assert f"{NAMES[500]} (0.770)" in text and f"{NAMES[3]} (0.870)" in text and f"<b>true</b> {NAMES[3]}" in text
    # Hostile strings from run.json are escaped, never markup.
    assert HOSTILE not in text and escape(HOSTILE) in text and "9.9<b>" not in text and "9.9&lt;b&gt;" in text
    env = {r[0]: r for r in page.tables["env-table"][1:]}
    assert set(env) == {"pytorch-resnet50", "keras-resnet50", "mxnet-resnet50_v1"}
    head = page.tables["env-table"][0]
    cell = dict(zip(head, env["keras-resnet50"]))
    assert cell["Image"] == "zoobench/keras:cpu-abc" and cell["Image id"].startswith("sha256:222222")
    assert cell["Device"] == "cpu" and cell["Batch"] == "32" and cell["Precision"].startswith("fp32")
    assert cell["Data digest"].startswith("sha256:abab") and str(data_dir.resolve()) in cell["Data"]
    assert "resize_size" in cell["Preprocessing"] and "pillow" in cell["Software"]
    assert cell["Weights sha256"].startswith("cdcdcd") and cell["Weights"] == f"imagenet {HOSTILE}"


def test_data_option_and_missing_folder(tmp_path):
    results, data_dir = synthetic(tmp_path)
    moved = tmp_path / "elsewhere"
    data_dir.rename(moved)  # the recorded folder is gone
    proc = zoobench("report", str(results), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = (results / HTML_FILE).read_text(encoding="utf-8")
    assert text.count("pass --data DIR") == 1 and "data:image/jpeg" not in text and text.count("no image") == 7
    proc = zoobench("report", str(results), "--data", str(moved), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = (results / HTML_FILE).read_text(encoding="utf-8")
    assert text.count("data:image/jpeg") == 7 and "pass --data" not in text
    (moved / W[3] / "ILSVRC2012_val_00000004.JPEG").write_bytes(b"not a jpeg")
    proc = zoobench("report", str(results), "--data", str(moved), timeout=300)
    text = (results / HTML_FILE).read_text(encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    # Image 3 is in two pairs' galleries: 5 thumbnails of 7 left, one note naming it.
    assert text.count("data:image/jpeg") == 5 and "1 image(s) not found or unreadable" in text
    one_line_error(zoobench("report", str(results), "--data", str(tmp_path / "nowhere"), timeout=300),
                   "--data")


def test_no_pair_and_labels_csv(tmp_path):
    results, _ = synthetic(tmp_path, data=False)
    shutil.rmtree(results / "keras-resnet50")
    shutil.rmtree(results / "mxnet-resnet50_v1")
    csv_path = tmp_path / "labels.csv"
    paths = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(6)]
    wnid = [W[1]] + list(W[1:6])  # image 0 relabelled: the PyTorch run gets it wrong
    csv_path.write_text("filename,wnid\n" + "".join(f"{p},{w}\n" for p, w in zip(paths, wnid)))
    proc = zoobench("report", str(results), "--labels", str(csv_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = (results / HTML_FILE).read_text(encoding="utf-8")
    assert text.count("No architecture has runs in two frameworks") == 1 and "<figure>" not in text
    rows = Page(text).tables["ranking-table"]
    assert rows[1][8] == pct(5 / 6)  # image 0 relabelled by the CSV: 5 of 6 right


def test_the_gallery_is_capped_in_all_not_only_per_pair():
    from orchestrator.results.compare import AgreementMatrix
    from orchestrator.results.htmlreport import MAX_CARDS, PER_PAIR, images_per_pair

    def arch(n_runs: int) -> AgreementMatrix:
        return AgreementMatrix("a", [f"r{i}" for i in range(n_runs)], [], [], [], [])

    assert images_per_pair([arch(2), arch(3)]) == PER_PAIR  # 4 pairs x 8
    many = [arch(3)] * 40  # 120 pairs
    assert images_per_pair(many) * 120 <= MAX_CARDS and images_per_pair(many) >= 1
    assert images_per_pair([arch(40)]) == 1  # 780 pairs: still one image each


def test_real_labels(published_subset, tmp_path):
    manifest = ArchitecturesManifest.model_validate({"architectures": {"resnet50": {"pytorch": "resnet50",
                                                                                     "keras": "resnet50"}}})
    rows = run_rank(published_subset, "real", "none", Console(file=io.StringIO()))
    text = write_html_report(rows, published_subset, tmp_path, manifest, labels="real").read_text(encoding="utf-8")
    page = Page(text)
    assert "ReaL Acc@1 %" in page.tables["ranking-table"][0]
    assert text.count('<table class="matrix"') == 1 and text.count("<figure>") == 8
    assert [r[0] for r in page.tables["ranking-table"][1:]] == [r.result.run for r in rows]


# ---------------------------------------------------------------- real browser

APT = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium through chromedriver, no network (a proxy pointing nowhere), logging the console
    and the network. Under CI=true as root, a missing chromium/chromium-driver is installed from Debian."""
    missing = lambda: not (shutil.which("chromium") and shutil.which("chromedriver"))  # noqa: E731
    if missing() and IN_CI and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(APT, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(APT, env=env, capture_output=True)
    require(not missing(), "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed; pip install -e '.[test]'")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager: never download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> dict:
    """Load ``path``; return what it fetched, its console errors and its images' natural widths."""
    driver.get_log("browser")  # drop earlier pages' entries
    driver.get_log("performance")
    driver.get(path.resolve().as_uri())
    time.sleep(0.3)  # let image decodes and any late request land in the logs
    sent = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            sent.append(msg["params"]["request"]["url"])
    return {
        "requests": sent,
        "resources": driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
        "errors": [e for e in driver.get_log("browser") if e["level"] == "SEVERE"],
        "imgs": driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"),
        "title": driver.title,
    }


def assert_offline_and_clean(seen: dict) -> None:
    bad = [u[:80] for u in seen["requests"] + seen["resources"] if not u.startswith(("file:", "data:"))]
    assert not bad, f"network requests: {bad}"
    assert not seen["errors"], seen["errors"]
    assert seen["imgs"] and all(ok and w > 0 and h > 0 for ok, w, h in seen["imgs"]), seen["imgs"]


def table_column(driver, header: str) -> list[str]:
    return driver.execute_script(
        "var t = document.getElementById('ranking-table'); var h = Array.from(t.tHead.rows[0].cells)"
        ".findIndex(c => c.textContent.replace(/[\\u25B2\\u25BC]/g, '').trim() === arguments[0]);"
        "return Array.from(t.tBodies[0].rows).map(r => r.cells[h].textContent);", header)


def click_header(driver, header: str) -> None:
    from selenium.webdriver.common.by import By

    for th in driver.find_elements(By.CSS_SELECTOR, "#ranking-table thead th"):
        if th.text.strip(" \u25B2\u25BC") == header:
            th.click()
            return
    raise AssertionError(f"no header {header!r}")


@pytest.mark.browser
def test_browser_detects_a_network_request(browser, tmp_path):
    """The checks below would see a page that fetches anything: a control page with an external image."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png"></body></html>')
    seen = open_page(browser, page)
    assert any(u.startswith("http://192.0.2.1/") for u in seen["requests"]), seen
    assert seen["errors"]  # the failed load is a console error
    assert not all(w > 0 for _, w, _ in seen["imgs"])


@pytest.mark.browser
def test_browser_published(browser, published_subset, tmp_path):
    started = time.perf_counter()
    proc = zoobench("report", str(published_subset), "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    ranked = json.loads(zoobench("rank", str(published_subset), "--format", "json", check=True, timeout=600).stdout)
    seen = open_page(browser, tmp_path / HTML_FILE)
    assert_offline_and_clean(seen)
    assert len(seen["imgs"]) == 2  # the plot and the reliability diagrams; no data folder here: no thumbnails
    assert browser.execute_script("return document.getElementById('reliability-img').naturalWidth") > 0
    assert browser.execute_script("return document.getElementById('calibration-table').tBodies[0].rows.length") \
        == len(ranked)
    assert browser.execute_script("return document.querySelectorAll('figure').length") == 2 * 8
    assert "pass --data DIR" in browser.execute_script("return document.getElementById('gallery-note').textContent")
    # The rows are the ranking's: names and Acc@1 as `zoobench rank --format json` gives them, in its order.
    assert table_column(browser, "Run") == [r["run"] for r in ranked]
    assert table_column(browser, "Acc@1 %") == [pct(r["acc1"]) for r in ranked]
    assert table_column(browser, "Model") == [r["model"] for r in ranked]
    acc5 = {r["run"]: r["acc5"] for r in ranked}
    by_acc5 = sorted(acc5, key=lambda run: acc5[run])
    click_header(browser, "Acc@5 %")
    assert table_column(browser, "Run") == by_acc5
    click_header(browser, "Acc@5 %")
    assert table_column(browser, "Run") == by_acc5[::-1]
    click_header(browser, "Model")  # text: ascending, then descending
    models = table_column(browser, "Model")
    assert models == sorted(models, key=str.lower) and models != [r["model"] for r in ranked]
    click_header(browser, "Model")
    assert table_column(browser, "Model") == sorted(models, key=str.lower, reverse=True)
    # The agreement matrices: resnet50 and densenet121 (Keras vs PyTorch).
    assert browser.execute_script("return document.querySelectorAll('table.matrix').length") == 2
    assert seen["title"].startswith("zoobench report")
    print(f"\nbrowser test on {len(ranked)} published runs: {time.perf_counter() - started:.1f} s")


@pytest.mark.browser
def test_browser_synthetic_thumbnails(browser, tmp_path):
    results, _ = synthetic(tmp_path)
    zoobench("report", str(results), check=True, timeout=300)
    seen = open_page(browser, results / HTML_FILE)
    assert_offline_and_clean(seen)
    assert seen["title"] != "pwned"  # the hostile weights source stayed text
    # The plot, the reliability diagrams, the 7 gallery thumbnails, each at most THUMB_PX.
    assert len(seen["imgs"]) == 2 + 7
    assert all(max(w, h) <= THUMB_PX for _, w, h in seen["imgs"][2:])
    ips = [310.5, 120.25, 95.0]
    click_header(browser, "img/s")
    assert table_column(browser, "img/s") == [f"{x:.1f}" for x in sorted(ips)]
    click_header(browser, "img/s")
    assert table_column(browser, "img/s") == [f"{x:.1f}" for x in sorted(ips, reverse=True)]
    captions = browser.execute_script(
        "return Array.from(document.querySelectorAll('figcaption')).map(f => f.innerText)")
    assert any(NAMES[500] in c and NAMES[3] in c for c in captions)
