"""Scoring, ranking, labels, formatters and the report on small synthetic results folders."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import zoobench
from orchestrator.results.labels import LabelError, labels_for, labels_from_csv, labels_from_folders, read_label_csv
from orchestrator.results.ranking import ERRORS, RankError, load_results, rank_results, run_rank
from orchestrator.results.report import write_report
from orchestrator.results.stats import mcnemar_exact, wilson
from zoobench_contract.imagenet import wnids

W = wnids()
N = 200
DIGEST = "sha256:" + "ab" * 32


def dataset(n: int = N) -> tuple[list[str], np.ndarray]:
    """n paths in synset folders (cycling over 7 classes) and their true class indices."""
    classes = [0, 1, 2, 500, 997, 998, 999]
    y = np.array([classes[i % len(classes)] for i in range(n)], dtype=np.int64)
    paths = sorted(f"{W[c]}/img_{i:05d}.JPEG" for i, c in enumerate(y))
    y = np.array([W.index(p.split("/")[0]) for p in paths], dtype=np.int64)
    return paths, y


def predictions(y: np.ndarray, top1_right: np.ndarray, top5_right: np.ndarray, k: int = 5) -> np.ndarray:
    """Top-k rows: truth in column 0 where top1_right, in column 3 where only top5_right, else at column k-1
    when k > 5 (outside the top 5) or absent."""
    wrong = (y + 1 + np.arange(k)[:, None]).T % 1000  # k distinct classes, none equal to y
    topk = wrong.copy()
    topk[top1_right, 0] = y[top1_right]
    only5 = top5_right & ~top1_right
    topk[only5, 3] = y[only5]
    rest = ~top5_right
    if k > 5:
        topk[rest, k - 1] = y[rest]  # right answer at rank 6+: must not count for Acc@5
    return topk.astype(np.int64)


def write_run(results: Path, name: str, paths, topk, *, framework="pytorch", version="2.14.1", model=None,
              weights="imagenet", digest=DIGEST, ips=100.0, status="ok") -> Path:
    run_dir = results / name
    run_dir.mkdir(parents=True)
    np.savez(run_dir / "predictions.npz", paths=np.asarray(paths, dtype=np.str_), topk_indices=topk,
             topk_scores=np.linspace(0.5, 0.1, topk.shape[1], dtype=np.float32)[None].repeat(len(paths), 0))
    run = {"schema_version": 1, "status": status, "framework": framework, "framework_version": version,
           "model": model or name.split("-", 1)[1], "weights": {"kind": weights, "requested": weights,
                                                                "source": "test", "sha256": None},
           "preprocessing": {}, "device": "cpu", "batch_size": 8, "n_images": len(paths),
           "images_per_second": ips, "seconds": {"load": 1, "warmup": 1, "inference": 1, "compute": 1}, "env": {},
           "data": {"root": "/data", "digest": digest, "n_images": len(paths), "limit": None}}
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def mask(n_true: int, n: int = N, offset: int = 0) -> np.ndarray:
    m = np.zeros(n, bool)
    m[(np.arange(n_true) + offset) % n] = True
    return m


@pytest.fixture()
def results(tmp_path) -> Path:
    """Four runs: Acc@1 150/150/120/1 of 200 (a tie), Acc@5 190/180/190/3, one random-weight run."""
    paths, y = dataset()
    out = tmp_path / "results"
    write_run(out, "pytorch-resnet50", paths, predictions(y, mask(150), mask(190)), ips=250.0)
    write_run(out, "keras-resnet50", paths, predictions(y, mask(150, offset=30), mask(180, offset=30), k=10),
              framework="keras", version="3.15.1", ips=90.0)
    write_run(out, "pytorch-alexnet", paths, predictions(y, mask(120), mask(190)), ips=900.0)
    write_run(out, "pytorch-resnet50-random", paths, predictions(y, mask(1), mask(3)), model="resnet50",
              weights="random", ips=240.0)
    # Not runs: in-progress and replaced folders, logs, a failed run, a stray file.
    write_run(out, "pytorch-vgg16.partial", paths, predictions(y, mask(200), mask(200)))
    write_run(out, "pytorch-vgg19.old", paths, predictions(y, mask(200), mask(200)))
    (out / "logs").mkdir()
    (out / "logs" / "pytorch-vgg16.log").write_text("...")
    write_run(out, "keras-vgg16", paths, predictions(y, mask(200), mask(200)), framework="keras", status="failed")
    (out / "results.md").write_text("old report")
    return out


# ---------------------------------------------------------------- labels

def test_labels_from_synset_folders():
    paths = [f"{W[0]}/a.JPEG", f"val/{W[999]}/b.jpg", f"{W[5]}/{W[7]}/c.png", f"x/{W[3]}/deeper/d.jpg"]
    assert labels_from_folders(paths).tolist() == [0, 999, 7, 3]
    with pytest.raises(LabelError) as err:
        labels_from_folders([f"{W[0]}/a.JPEG", "cats/b.jpg"])
    msg = str(err.value)
    assert "cats/b.jpg" in msg and "--labels" in msg and "\n" not in msg
    with pytest.raises(LabelError):
        labels_from_folders(["n99999999/a.jpg"])  # wnid-shaped but not ImageNet-1k


def test_labels_from_csv(tmp_path, northcutt_dir):
    simple = tmp_path / "labels.csv"
    simple.write_text(f"filename,wnid\na.JPEG,{W[10]}\nsub/b.jpg,{W[20]}\n")
    assert labels_from_csv(["x/a.JPEG", "b.jpg"], simple).tolist() == [10, 20]
    assert labels_for(["a.JPEG"], simple).tolist() == [10]
    with pytest.raises(LabelError) as err:
        labels_from_csv(["a.JPEG", "c.jpg"], simple)
    assert "c.jpg" in str(err.value) and str(simple) in str(err.value)
    # The published ground truth (index,filename,wnid,label) works as is.
    table = read_label_csv(northcutt_dir / "imagenet_val_ground_truth_imagefolder_order.csv")
    assert len(table) == 50000 and table["ILSVRC2012_val_00000293.JPEG"] == 0
    for text, fragment in [("file,class\na,b\n", "filename,wnid"), ("filename,wnid\na.jpg,nope\n", "line 2"),
                           (f"filename,wnid\na.jpg,{W[1]}\na.jpg,{W[2]}\n", "twice"), ("filename,wnid\n", "no rows")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(LabelError, match=fragment):
            read_label_csv(bad)
    with pytest.raises(LabelError, match="cannot read"):
        read_label_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------- scoring and ranking

def test_scores_ranks_and_significance(results):
    scored, notes = load_results(results)
    assert sorted(r.run for r in scored) == ["keras-resnet50", "pytorch-alexnet", "pytorch-resnet50",
                                             "pytorch-resnet50-random"]
    assert len(notes) == 1 and "keras-vgg16" in notes[0] and "failed" in notes[0]
    rows = rank_results(scored)
    by_run = {r.result.run: r for r in rows}
    pt, kr = by_run["pytorch-resnet50"], by_run["keras-resnet50"]
    assert (pt.result.acc1, pt.result.acc5) == (0.75, 0.95)
    # keras holds the truth at rank 10 for the misses: that is not a top-5 hit.
    assert (kr.result.acc1, kr.result.acc5) == (0.75, 0.90)
    assert pt.result.ci1 == wilson(150, N) and kr.result.ci5 == wilson(180, N)
    assert pt.result.platform == "pytorch 2.14.1" and kr.result.platform == "keras 3.15.1"
    assert pt.result.correct1.sum() == 150 and pt.result.n == N
    # Sorted by Acc@1 (tie broken by Acc@5), competition ranks on both columns.
    assert [r.result.run for r in rows] == ["pytorch-resnet50", "keras-resnet50", "pytorch-alexnet",
                                            "pytorch-resnet50-random"]
    assert [r.rank1 for r in rows] == [1, 1, 3, 4]
    assert [r.rank5 for r in rows] == [1, 3, 1, 4]
    # McNemar vs the next row, from the discordant pairs: masks 0..149 vs 30..179.
    assert rows[0].p_vs_next == pytest.approx(mcnemar_exact(30, 30)) == 1.0
    assert rows[0].significant_vs_next is False
    b = int((kr.result.correct1 & ~by_run["pytorch-alexnet"].result.correct1).sum())
    c = int((~kr.result.correct1 & by_run["pytorch-alexnet"].result.correct1).sum())
    assert rows[1].p_vs_next == pytest.approx(mcnemar_exact(b, c))
    assert rows[2].significant_vs_next is True  # 120 vs 1 right
    assert rows[-1].p_vs_next is None and rows[-1].significant_vs_next is None
    assert rows[-1].result.weights == "random"


def test_single_run_folder_is_accepted(results):
    scored, _ = load_results(results / "pytorch-alexnet")
    assert [r.run for r in scored] == ["pytorch-alexnet"] and scored[0].acc1 == 0.6


def test_runs_are_found_at_any_depth(tmp_path):
    """Run folders nest (e.g. one folder per machine); skipped folders are skipped at every level."""
    from orchestrator.results.ranking import rank

    paths, y = dataset()
    out = tmp_path / "results"
    write_run(out / "cpu", "pytorch-resnet50", paths, predictions(y, mask(150), mask(190)))
    write_run(out / "gpu" / "day2", "keras-resnet50", paths, predictions(y, mask(120), mask(180)), framework="keras")
    write_run(out / "gpu" / "logs", "pytorch-x", paths, predictions(y, mask(200), mask(200)))
    write_run(out / "gpu", "pytorch-vgg16.partial", paths, predictions(y, mask(200), mask(200)))
    write_run(out / ".trash", "pytorch-y", paths, predictions(y, mask(200), mask(200)))
    orphan = write_run(out / "cpu", "pytorch-orphan", paths, predictions(y, mask(200), mask(200)))
    (orphan / "run.json").unlink()
    scored, notes = load_results(out)
    rows = rank(scored)
    assert [r.result.run for r in rows] == ["cpu/pytorch-resnet50", "gpu/day2/keras-resnet50"]
    assert [r.result.acc1 for r in rows] == [0.75, 0.6]
    assert notes == ["cpu/pytorch-orphan: predictions.npz without run.json; not ranked (re-run it)"]


def test_refuses_different_image_sets(tmp_path):
    paths, y = dataset()
    top = predictions(y, mask(100), mask(150))
    a = tmp_path / "digest"
    write_run(a, "pytorch-a", paths, top)
    write_run(a, "pytorch-b", paths, top, digest="sha256:" + "cd" * 32)
    with pytest.raises(RankError) as err:
        load_results(a)
    msg = str(err.value)
    assert "pytorch-a" in msg and "pytorch-b" in msg and "different image sets" in msg and "\n" not in msg
    b = tmp_path / "paths"
    write_run(b, "pytorch-a", paths, top)
    write_run(b, "pytorch-b", paths[:-1] + ["n01440764/other.JPEG"], top)
    with pytest.raises(RankError, match="pytorch-a.*pytorch-b.*different image sets"):
        load_results(b)
    c = tmp_path / "count"
    write_run(c, "pytorch-a", paths, top)
    write_run(c, "pytorch-b", paths[:100], top[:100])
    with pytest.raises(RankError, match="different image sets"):
        load_results(c)


def test_user_errors_are_one_line(tmp_path, results):
    console = Console(file=io.StringIO())
    (tmp_path / "empty").mkdir()
    with pytest.raises(RankError, match=r"no finished runs in .*empty; run `zoobench run` first"):
        run_rank(tmp_path / "empty", None, "table", console)
    with pytest.raises(RankError, match="does not exist"):
        run_rank(tmp_path / "nowhere", None, "table", console)
    with pytest.raises(RankError, match="unknown format 'xml'"):
        run_rank(results, None, "xml", console)
    broken = tmp_path / "broken"
    paths, y = dataset()
    write_run(broken, "pytorch-a", paths, predictions(y, mask(1), mask(1)))
    (broken / "pytorch-a" / "run.json").write_text("{not json")
    with pytest.raises(RankError, match="run.json: unreadable"):
        load_results(broken)
    (broken / "pytorch-a" / "run.json").unlink()
    write_run(broken, "pytorch-b", paths, predictions(y, mask(1), mask(1)))
    (broken / "pytorch-b" / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(RankError, match="predictions.npz: unreadable"):
        load_results(broken)
    short = tmp_path / "short"
    write_run(short, "pytorch-a", paths, predictions(y, mask(1), mask(1))[:, :3])
    with pytest.raises(RankError, match="K >= 5"):
        load_results(short)
    flat = tmp_path / "flat"
    write_run(flat, "pytorch-a", [p.split("/")[1] for p in paths], predictions(y, mask(1), mask(1)))
    with pytest.raises(LabelError, match="--labels"):
        load_results(flat)
    assert issubclass(RankError, ValueError) and set(ERRORS) == {RankError, LabelError}


def test_labels_csv_gives_the_same_scores(tmp_path, results):
    paths, y = dataset()
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,wnid\n" + "".join(f"{p.split('/')[1]},{p.split('/')[0]}\n" for p in paths))
    flat = tmp_path / "flat"
    write_run(flat, "pytorch-resnet50", [p.split("/")[1] for p in paths], predictions(y, mask(150), mask(190)))
    scored, _ = load_results(flat, labels)
    assert (scored[0].acc1, scored[0].acc5) == (0.75, 0.95)


# ---------------------------------------------------------------- formatters and report

def render(results: Path, fmt: str) -> str:
    buf = io.StringIO()
    run_rank(results, None, fmt, Console(file=buf, width=40))  # narrow: long lines must not wrap
    return buf.getvalue()


def test_csv_parses_back(results):
    rows = list(csv.DictReader(io.StringIO(render(results, "csv"))))
    assert [r["run"] for r in rows] == ["pytorch-resnet50", "keras-resnet50", "pytorch-alexnet",
                                        "pytorch-resnet50-random"]
    first = rows[0]
    assert (first["rank1"], first["rank5"], first["acc1_pct"], first["acc5_pct"]) == ("1", "1", "75.000", "95.000")
    assert first["platform"] == "pytorch 2.14.1" and first["images_per_second"] == "250.0"
    assert float(first["acc1_ci_low_pct"]) == pytest.approx(100 * wilson(150, N)[0], abs=5e-4)
    assert rows[-1]["weights"] == "random" and rows[-1]["p_vs_next"] == "" and rows[2]["significant_vs_next"] == "true"


def test_json_parses_back(results):
    rows = json.loads(render(results, "json"))
    required = {"platform", "model", "weights", "n", "acc1", "acc5", "acc1_ci", "acc5_ci", "rank1", "rank5",
                "images_per_second", "p_vs_next", "significant_vs_next"}
    assert all(required <= set(r) for r in rows) and len(rows) == 4
    assert rows[0]["acc1"] == 0.75 and rows[0]["acc5"] == 0.95 and rows[0]["n"] == N
    assert rows[0]["acc1_ci"] == pytest.approx(list(wilson(150, N)))
    assert [r["rank1"] for r in rows] == [1, 1, 3, 4] and rows[-1]["weights"] == "random"
    assert rows[0]["significant_vs_next"] is False and rows[-1]["p_vs_next"] is None


def test_markdown_and_table(results):
    md = render(results, "markdown").splitlines()
    table_lines = [line for line in md if line.startswith("|")]
    assert len(table_lines) == 2 + 4 and all(line.count("|") == table_lines[0].count("|") for line in table_lines)
    assert "| 75.000 |" in table_lines[2] and "random" in table_lines[-1]
    buf = io.StringIO()
    run_rank(results, None, "table", Console(file=buf, width=220))
    text = buf.getvalue()
    assert "random" in text and "75.000" in text and "95.000" in text and "keras 3.15.1" in text
    assert render(results, "none") == ""


def test_report_files(results, tmp_path):
    rows = run_rank(results, None, "none", Console(file=io.StringIO()))
    out = tmp_path / "report"
    written = write_report(rows, out)
    assert [p.name for p in written] == ["results.md", "acc_vs_speed.png"]
    md = (out / "results.md").read_text()
    assert "75.000" in md and "random" in md and DIGEST in md
    png = (out / "acc_vs_speed.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["acc_vs_speed.png", "results.md"]  # no temp files left
    # Runs without a throughput still get a report (and the markdown says which).
    for row in rows:
        row.result.images_per_second = None
    write_report(rows, out)
    assert "No throughput recorded" in (out / "results.md").read_text()


# ---------------------------------------------------------------- the real command line

def test_cli_rank_and_report(results, tmp_path):
    proc = zoobench("rank", str(results), "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["rank1"] for r in json.loads(proc.stdout)] == [1, 1, 3, 4]
    assert "keras-vgg16" in proc.stderr  # the failed run is a note on stderr
    proc = zoobench("report", str(results), "--out", str(tmp_path / "rep"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "results.md").is_file() and (tmp_path / "rep" / "acc_vs_speed.png").is_file()
    (tmp_path / "empty").mkdir()
    proc = zoobench("rank", str(tmp_path / "empty"), timeout=120)
    assert proc.returncode == 2 and "no finished runs" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- precision

def set_precision(run_dir: Path, precision: str) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**run, "precision": precision}))


def test_runs_without_precision_are_fp32_and_the_column_is_shown(results):
    scored, _ = load_results(results)
    assert {r.precision for r in scored} == {"fp32"}
    assert {r["precision"] for r in json.loads(render(results, "json"))} == {"fp32"}
    assert {r["precision"] for r in csv.DictReader(io.StringIO(render(results, "csv")))} == {"fp32"}
    header = render(results, "markdown").splitlines()[0]
    assert "| Weights | Precision | N |" in header


def test_different_precisions_are_refused_unless_asked(tmp_path):
    paths, y = dataset()
    out = tmp_path / "mixed"
    write_run(out, "pytorch-resnet50", paths, predictions(y, mask(150), mask(190)))
    set_precision(write_run(out, "pytorch-resnet50-bf16", paths, predictions(y, mask(149), mask(190)),
                            model="resnet50"), "bf16")
    set_precision(write_run(out, "keras-resnet50", paths, predictions(y, mask(140), mask(190)),
                            framework="keras"), "fp32")
    with pytest.raises(RankError) as err:
        load_results(out)
    msg = str(err.value)
    assert "different precisions" in msg and "--mixed-precision" in msg and "\n" not in msg
    assert "bf16: 1 run(s), e.g. 'pytorch-resnet50-bf16'" in msg and "fp32: 2 run(s)" in msg
    scored, _ = load_results(out, mixed_precision=True)
    assert {r.run: r.precision for r in scored} == {"pytorch-resnet50": "fp32", "pytorch-resnet50-bf16": "bf16",
                                                    "keras-resnet50": "fp32"}
    rows = json.loads(render_mixed(out, "json"))
    assert [(r["run"], r["precision"]) for r in rows][:2] == [("pytorch-resnet50", "fp32"),
                                                             ("pytorch-resnet50-bf16", "bf16")]
    assert "bf16" in render_mixed(out, "markdown") and "bf16" in render_mixed(out, "table")
    only_bf16 = tmp_path / "bf16"
    for name in ("pytorch-a", "pytorch-b"):
        set_precision(write_run(only_bf16, name, paths, predictions(y, mask(100), mask(150))), "bf16")
    assert {r.precision for r in load_results(only_bf16)[0]} == {"bf16"}  # one precision: no flag needed
    refused = zoobench("rank", str(out), timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.startswith("error:")] == [f"error: {msg}"]
    accepted = zoobench("rank", str(out), "--mixed-precision", "--format", "csv", timeout=120)
    assert accepted.returncode == 0, accepted.stderr
    assert {r["precision"] for r in csv.DictReader(io.StringIO(accepted.stdout))} == {"fp32", "bf16"}


def render_mixed(results: Path, fmt: str) -> str:
    buf = io.StringIO()
    run_rank(results, None, fmt, Console(file=buf, width=250), mixed_precision=True)
    return buf.getvalue()


# ---------------------------------------------------------------- 80 columns

def test_table_rows_fit_80_columns_and_are_full_when_wide(tmp_path):
    """At 80 columns each data row is one line (frameworks, with a version legend); at 200 all is there."""
    paths, y = dataset()
    out = tmp_path / "wide"
    long_model = "mobilenet_v3_large_with_a_very_long_variant_name"
    write_run(out, "pytorch-mobilenet_v3_large", paths, predictions(y, mask(150), mask(190)),
              version="2.14.1+cu130", ips=1234.5)
    write_run(out, "keras-inceptionresnetv2", paths, predictions(y, mask(140), mask(180)), framework="keras",
              version="3.15.1", ips=90.0)
    set_precision(write_run(out, "mxnet-mobilenetv2_1.0", paths, predictions(y, mask(120), mask(170)),
                            framework="mxnet", version="1.9.1", ips=900.0), "bf16")
    write_run(out, "pytorch-regnet_y_128gf", paths, predictions(y, mask(1), mask(3)), version="2.14.1+cu130",
              weights="random")
    def one_line_rows(width: int, n_runs: int, versions: tuple[str, ...] = ("2.14.1+cu130",)) -> str:
        buf = io.StringIO()
        run_rank(out, None, "table", Console(file=buf, width=width), mixed_precision=True)
        lines = buf.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        data = [line for line in lines if line.split() and line.split()[0].isdigit() and len(line.split()) > 5]
        assert len(data) == n_runs, buf.getvalue()  # one line per run: nothing wrapped
        assert sum("pytorch" in line for line in data) == n_runs - 2 and any("random" in line for line in data)
        text = buf.getvalue()
        assert all(v in text for v in (*versions, "3.15.1", "1.9.1"))  # the legend keeps the full versions
        if len(versions) > 1:  # two pytorch versions: the short one on each row
            assert any("pytorch 2.14.1 " in line for line in data) and any("pytorch 2.14.0 " in line for line in data)
        else:  # one version per framework: the framework alone
            assert not any("2.14" in line for line in data)
        return text

    for width in (80, 100):
        text = one_line_rows(width, 4)
        assert "inceptionresnetv2" in text and "mobilenet_v3_large" in text and "bf16" in text  # names in full
    # Two versions of one framework and a model name too long for 80 columns: cut with an ellipsis, not wrapped.
    write_run(out, "pytorch-long", paths, predictions(y, mask(100), mask(150)), version="2.14.0+cpu",
              model=long_model)
    narrow = one_line_rows(80, 5, ("2.14.1+cu130", "2.14.0+cpu"))
    assert long_model not in narrow and "…" in narrow
    buf = io.StringIO()
    run_rank(out, None, "table", Console(file=buf, width=200), mixed_precision=True)
    wide = buf.getvalue()
    assert "pytorch 2.14.1+cu130" in wide and "keras 3.15.1" in wide and long_model in wide
    assert "Acc@1 95% CI" in wide and "Precision" in wide
    assert f"{100 * wilson(150, N)[0]:.3f}-{100 * wilson(150, N)[1]:.3f}" in wide
