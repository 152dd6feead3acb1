"""Calibration (ECE, over-confidence, NLL/Brier, reliability bins), the cost columns of the ranking
(model_facts, speed/*/bench.json, --columns, --format timm|json|csv), the Pareto front, and the report's
cost and calibration sections.

``test_published_calibration_table`` also computes the numbers of docs/answers.md ("Calibration of the
34 published runs"); run it with ``-s`` to print the table."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from orchestrator.results.calibration import N_BINS, calibration, ece, nll_brier
from orchestrator.results.columns import COLUMNS, TIMM_FIELDS
from orchestrator.results.costplots import pareto_front
from orchestrator.results.htmlreport import write_html_report
from orchestrator.results.architectures import load_architectures
from orchestrator.results.ranking import RankError, load_results, run_rank
from orchestrator.results.report import write_report
from test_northcutt import PUBLISHED, convert, source_files
from test_ranking import dataset, mask, predictions, write_run

HOSTILE = "<b>x</b>|*y*"


# ---------------------------------------------------------------- reference implementations

def loop_ece(conf: np.ndarray, right: np.ndarray, n_bins: int = 15) -> float:
    """ECE in % with a plain loop over the bins [k/n, (k+1)/n), the last closed at 1."""
    total = 0.0
    n = len(conf)
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (conf >= lo) & ((conf <= hi) if k == n_bins - 1 else (conf < hi))
        m = int(inside.sum())
        if m:
            total += m / n * abs(float(right[inside].mean()) - float(conf[inside].mean()))
    return 100 * total


def loop_nll_brier(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    nll = brier = 0.0
    for z, t in zip(logits.astype(np.float64), y):
        p = np.exp(z - z.max())
        p /= p.sum()
        nll += -math.log(p[t])
        onehot = np.zeros_like(p)
        onehot[t] = 1.0
        brier += float(((p - onehot) ** 2).sum())
    return nll / len(y), brier / len(y)


def published_top1(northcutt: Path, framework: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 probability, top-1 right) of a published run: top-1 is the arg-max of the probabilities."""
    y = np.load(northcutt / "imagenet_val_labels_imagefolder_order.npy")
    preds_path, probs_path = source_files(northcutt, framework, model)
    preds, probs = np.load(preds_path), np.load(probs_path).astype(np.float32).astype(np.float64)
    col = probs.argmax(axis=1)
    rows = np.arange(len(y))
    return probs[rows, col], preds[rows, col] == y


# ---------------------------------------------------------------- calibration

SOME = [("pytorch", "inception_v3"), ("keras", "inceptionv3"), ("keras", "xception"), ("pytorch", "resnet152"),
        ("pytorch", "alexnet")]


@pytest.mark.parametrize("framework,model", SOME)
def test_ece_matches_a_loop_on_published_predictions(northcutt_dir, framework, model):
    conf, right = published_top1(northcutt_dir, framework, model)
    cal = calibration(conf, right)
    assert cal.ece == pytest.approx(loop_ece(conf, right), abs=1e-9)
    assert ece(conf, right) == pytest.approx(cal.ece, abs=1e-12)
    assert cal.overconfidence == pytest.approx(100 * (conf.mean() - right.mean()), abs=1e-9)
    assert int(cal.counts.sum()) == 50_000 and len(cal.counts) == N_BINS
    assert cal.nll is None and "logits" in cal.why_no_nll


def test_bins_edges_and_empty_bins():
    conf = np.array([0.0, 1 / 15 - 1e-12, 1 / 15, 0.5, 1.0, 1.0])
    right = np.array([False, True, True, True, True, False])
    cal = calibration(conf, right)
    assert cal.counts.tolist()[:2] == [2, 1] and cal.counts[14] == 2 and cal.counts.sum() == 6
    assert math.isnan(cal.confidence[3]) and cal.bins()[3]["count"] == 0 and cal.bins()[3]["accuracy"] is None
    assert cal.ece == pytest.approx(loop_ece(conf, right), abs=1e-12)
    perfect = calibration(np.full(10, 0.7), np.arange(10) < 7)
    assert perfect.ece == pytest.approx(0.0, abs=1e-12) and perfect.overconfidence == pytest.approx(0.0, abs=1e-12)


def test_nll_and_brier_against_numpy():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(300, 1000)) * 3).astype(np.float32)
    y = rng.integers(0, 1000, 300)
    nll, brier = nll_brier(logits, y, chunk=64)
    ref_nll, ref_brier = loop_nll_brier(logits, y)
    assert nll == pytest.approx(ref_nll, rel=1e-12) and brier == pytest.approx(ref_brier, rel=1e-12)
    assert 0 <= brier <= 2
    big = logits.astype(np.float16) * 20  # float16 logits of large magnitude: still finite in float64
    assert all(map(math.isfinite, nll_brier(big, y)))


# ---------------------------------------------------------------- fake run folders

def add_facts(run_dir: Path, params: int | None, macs: int | None, **extra) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    run["model_facts"] = {"params": {"total": params, "trainable": params, "counter": "test"},
                          "macs": {"value": macs, "input_size": [224, 224], "counter": "test", "convention": "MACs",
                                   "why": None}}
    run["preprocessing"] = {"crop_size": 224, "resize_size": 256, "interpolation": "bilinear"}
    run.update(extra)
    (run_dir / "run.json").write_text(json.dumps(run))


def add_speed(results: Path, image: str, framework: str, model: str, ms: float, ips: float, *, precision="fp32",
              mode="default") -> None:
    folder = results / "speed" / f"{image}-{model}"
    folder.mkdir(parents=True)
    bench = {"framework": framework, "model": model, "weights": "imagenet", "precision": precision, "mode": mode,
             "device": "cpu", "results": [
                 {"batch_size": 1, "samples_per_second": 1000 / ms, "step_ms": {"p50": ms, "p90": ms * 1.1},
                  "peak_memory_bytes": 2**28, "peak_memory": "test"},
                 {"batch_size": 32, "samples_per_second": ips, "step_ms": {"p50": 32000 / ips},
                  "peak_memory_bytes": 3 * 2**30, "peak_memory": "test"}],
             "best": {"batch_size": 32, "samples_per_second": ips}, "batch1_ms": ms}
    (folder / "bench.json").write_text(json.dumps(bench))


@pytest.fixture()
def costed(tmp_path) -> Path:
    """Three runs with model facts and speed, one (keras) without; a hostile model name."""
    paths, y = dataset()
    out = tmp_path / "results"
    add_facts(write_run(out, "pytorch-resnet50", paths, predictions(y, mask(150), mask(190)), ips=250.0),
              25_557_032, 4_089_184_256)
    add_facts(write_run(out, "pytorch-alexnet", paths, predictions(y, mask(110), mask(170)), ips=900.0),
              61_100_840, 714_206_912)
    add_facts(write_run(out, "pytorch-vit", paths, predictions(y, mask(100), mask(160)), ips=90.0, model=HOSTILE),
              86_000_000, 17_500_000_000)
    write_run(out, "keras-resnet50", paths, predictions(y, mask(140), mask(180)), framework="keras", ips=90.0)
    add_speed(out, "zoobench-pytorch-cpu", "pytorch", "resnet50", 12.5, 410.0)
    add_speed(out, "zoobench-pytorch-cpu", "pytorch", "alexnet", 3.0, 2000.0)
    add_speed(out, "zoobench-pytorch-cpu-compile", "pytorch", "resnet50-other", 1.0, 1.0)  # another model
    return out


def rank_text(results: Path, fmt: str, width: int = 80, **kw) -> str:
    buf = io.StringIO()
    run_rank(results, None, fmt, Console(file=buf, width=width), **kw)
    return buf.getvalue()


def test_json_and_csv_carry_costs_and_calibration(costed):
    rows = {r["run"]: r for r in json.loads(rank_text(costed, "json"))}
    r50 = rows["pytorch-resnet50"]
    assert r50["params_m"] == pytest.approx(25.557032) and r50["gmacs"] == pytest.approx(4.089184256)
    assert r50["latency_ms"] == 12.5 and r50["best_samples_per_second"] == 410.0 and r50["best_batch_size"] == 32
    assert r50["peak_memory_bytes"] == 3 * 2**30 and r50["mode"] == "default"
    # write_run stores a top-1 probability of 0.5 for every image: confidence 50 %, Acc@1 75 %.
    assert r50["ece_pct"] == pytest.approx(25.0) and r50["overconfidence_points"] == pytest.approx(-25.0)
    assert r50["nll"] is None and r50["brier"] is None and len(r50["reliability"]) == 15
    keras = rows["keras-resnet50"]
    assert keras["params_m"] is None and keras["gmacs"] is None and keras["latency_ms"] is None
    assert keras["ece_pct"] == pytest.approx(20.0)
    table = list(csv.DictReader(io.StringIO(rank_text(costed, "csv"))))
    by_run = {r["run"]: r for r in table}
    assert by_run["pytorch-alexnet"]["latency_ms"] == "3" and by_run["keras-resnet50"]["gmacs"] == ""
    assert float(by_run["pytorch-resnet50"]["ece_pct"]) == pytest.approx(25.0)


def test_timm_format(costed):
    text = rank_text(costed, "timm")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == TIMM_FIELDS
    assert text.splitlines()[0] == "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"
    rows = list(reader)
    assert [r["model"] for r in rows] == ["pytorch/resnet50", "keras/resnet50", "pytorch/alexnet", f"pytorch/{HOSTILE}"]
    first = rows[0]
    assert first["top1"] == "75.000" and first["top1_err"] == "25.000" and first["top5"] == "95.000"
    assert first["param_count"] == "25.56" and first["img_size"] == "224" and first["crop_pct"] == "0.875"
    assert first["interpolation"] == "bilinear" and rows[1]["param_count"] == ""


def test_columns_option_and_80_columns(costed):
    text = rank_text(costed, "table", 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    head = next(line for line in lines if "#1" in line)
    assert re.findall(r"\S+", head) == ["#1", "Framework", "Model", "Acc@1", "Acc@5", "ECE", "img/s", "GMACs",
                                        "ParamM"]
    data = [line for line in lines if line.split() and line.split()[0].isdigit() and len(line.split()) > 5]
    assert len(data) == 4  # one line per run
    chosen = rank_text(costed, "table", 80, columns="model,latency,best_img_s,memory")
    head = next(line for line in chosen.splitlines() if "Model" in line)
    assert re.findall(r"[\w@/-]+(?: [\w@/()-]+)*", head) == ["Model", "Batch-1 ms (p50)", "Best samples/s",
                                                             "Peak memory"]
    assert "12.50" in chosen and "3.00 GiB" in chosen and "410.0" in chosen
    wide = rank_text(costed, "table", 400, columns="all")
    assert all(COLUMNS[k].header.split()[0] in wide for k in COLUMNS)
    assert max(len(line) for line in rank_text(costed, "table", 80, columns="all").splitlines()) <= 80
    with pytest.raises(RankError, match="unknown column 'speed'"):
        rank_text(costed, "table", 80, columns="model,speed")


def test_modes_are_ranked_apart_like_precisions(costed):
    run = json.loads((costed / "pytorch-alexnet" / "run.json").read_text())
    (costed / "pytorch-alexnet" / "run.json").write_text(json.dumps({**run, "mode": "compile"}))
    with pytest.raises(RankError) as err:
        load_results(costed)
    msg = str(err.value)
    assert "precisions or modes" in msg and "fp32 mode compile" in msg and "--mixed-precision" in msg
    results, _ = load_results(costed, mixed_precision=True)
    alexnet = next(r for r in results if r.run == "pytorch-alexnet")
    assert alexnet.mode == "compile" and alexnet.latency_ms is None  # the speed file is of mode default


def test_logits_give_nll_and_brier(tmp_path):
    paths, y = dataset()
    out = tmp_path / "results"
    run_dir = write_run(out, "pytorch-resnet50", paths, predictions(y, mask(150), mask(190)))
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(len(paths), 1000)).astype(np.float16)
    with np.load(run_dir / "predictions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(run_dir / "predictions.npz", **arrays, logits=logits)
    result = load_results(out)[0][0]
    nll, brier = loop_nll_brier(logits, y)
    assert result.nll == pytest.approx(nll, rel=1e-9) and result.brier == pytest.approx(brier, rel=1e-9)


def test_pareto_front():
    # cost, accuracy: (1, .5) (2, .7) (3, .6) dominated by (2, .7); (4, .9); (4, .8) dominated; (5, .9) dominated
    flags = pareto_front([1, 2, 3, 4, 4, 5], [0.5, 0.7, 0.6, 0.9, 0.8, 0.9])
    assert flags == [True, True, False, True, False, False]
    assert pareto_front([1, 1], [0.5, 0.5]) == [True, True]  # ties dominate neither


def test_report_cost_and_calibration_sections(costed, tmp_path):
    rows = run_rank(costed, None, "none", Console(file=io.StringIO()))
    written = write_report(rows, tmp_path / "out")
    assert [p.name for p in written] == ["results.md", "acc_vs_speed.png", "acc_vs_gmacs.png", "acc_vs_latency.png"]
    md = written[0].read_text()
    assert "## Calibration" in md and "(acc_vs_gmacs.png)" in md and HOSTILE not in md
    html = write_html_report(rows, costed, tmp_path / "out", load_architectures()).read_text()
    for needle in ('id="costs"', 'id="gmacs-img"', 'id="latency-img"', 'id="costs-table"', 'id="calibration"',
                   'id="calibration-table"', 'id="reliability-img"', "Pareto front", "needs logits"):
        assert needle in html, needle
    assert HOSTILE not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert not re.search(r"https?://", html.replace("http-equiv", ""))
    costs = html[html.index('id="costs-table"'):].split("</table>")[0]
    alexnet = next(tr for tr in costs.split("<tr") if "pytorch-alexnet" in tr)
    assert "img/s" in alexnet and "GMACs" in alexnet and "latency" in alexnet  # the cheapest: on every front


# ---------------------------------------------------------------- the 34 published runs (docs/answers.md)

def published_table(northcutt: Path) -> list[tuple[str, str, float, float, float, float]]:
    """(framework, model, Acc@1 %, mean confidence %, over-confidence points, ECE %), most over-confident first."""
    out = []
    for platform, model, *_ in PUBLISHED:
        framework = platform.split()[0].lower()
        conf, right = published_top1(northcutt, framework, model)
        cal = calibration(conf, right)
        out.append((framework, model, 100 * cal.acc1, 100 * cal.mean_confidence, cal.overconfidence, cal.ece))
    return sorted(out, key=lambda r: -r[4])


def test_published_calibration_table(northcutt_dir, tmp_path):
    table = published_table(northcutt_dir)
    print("\n| # | Framework | Model | Acc@1 % | Mean confidence % | Over-confidence (points) | ECE % |")
    for i, (fw, model, acc, conf, over, e) in enumerate(table, 1):
        print(f"| {i} | {fw} | {model} | {acc:.2f} | {conf:.2f} | {over:+.2f} | {e:.2f} |")
    by = {(fw, m): (acc, conf, over, e) for fw, m, acc, conf, over, e in table}
    # The finding of docs/answers.md: PyTorch inception_v3, scored at 224 px instead of 299, stands out.
    assert table[0][:2] == ("pytorch", "inception_v3")
    assert by["pytorch", "inception_v3"][2] == pytest.approx(18.92, abs=0.01)
    assert by["pytorch", "inception_v3"][3] == pytest.approx(18.92, abs=0.01)
    assert by["keras", "inceptionv3"][2] == pytest.approx(-0.32, abs=0.01)
    assert by["keras", "inceptionv3"][3] == pytest.approx(1.63, abs=0.01)
    others = sorted(abs(r[4]) for r in table[1:])
    assert table[0][4] > 2.5 * others[-1]  # ECE: 2.8 times the next largest
    # The ranking's own numbers (the run folders of `zoobench rank`) are the same.
    runs = convert(northcutt_dir, tmp_path / "results", flat=False,
                   only={"pytorch-inception_v3", "keras-inceptionv3", "keras-xception"})
    for r in load_results(runs)[0]:
        acc, conf, over, e = by[r.framework, r.model]
        assert r.ece == pytest.approx(e, abs=1e-9) and r.overconfidence == pytest.approx(over, abs=1e-9)
