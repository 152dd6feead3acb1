"""ReaL labels (--labels real) on the published predictions, checked against plain-numpy counts
made here from the published top-5 arrays and the shared real.json."""
from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import SHARED, one_line_error, require, zoobench
from orchestrator.results.labels import REAL, LabelError, parse_labels, truth_for
from orchestrator.results.ranking import load_results, rank_results, run_rank
from orchestrator.results.real import real_sets, val_numbers
from orchestrator.results.stats import competition_rank, mcnemar_exact, wilson
from test_northcutt import GROUND_TRUTH, PUBLISHED, convert, source_files

N_REAL = 46_837


@pytest.fixture(scope="module")
def real_json() -> list[list[int]]:
    path = SHARED / "real-labels" / "real.json"
    require(path.is_file(), f"{path} (the published ReaL labels) is not beside the checkout")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def published_runs(northcutt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("northcutt_real") / "results"
    yield convert(northcutt_dir, out, flat=False)
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def expected(northcutt_dir, real_json) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(framework, model) -> (ReaL top-1 right, ReaL top-5 right) over the labelled images, in
    ImageFolder row order, from a dense 50,000 x 1000 membership matrix (not zoobench's code)."""
    with (northcutt_dir / GROUND_TRUTH).open(newline="") as f:
        numbers = np.array([int(r["filename"][15:23]) for r in csv.DictReader(f)])
    member = np.zeros((50_000, 1000), bool)
    for i, classes in enumerate(real_json):
        member[i, classes] = True
    rows = member[numbers - 1]
    labelled = rows.any(axis=1)
    out = {}
    for platform, model, *_ in PUBLISHED:
        fw = platform.split()[0].lower()
        preds_path, probs_path = source_files(northcutt_dir, fw, model)
        preds, probs = np.load(preds_path), np.load(probs_path)
        top1 = preds[np.arange(len(preds)), probs.argmax(axis=1)]
        r1 = rows[np.arange(len(preds)), top1]
        r5 = np.take_along_axis(rows, preds, axis=1).any(axis=1)
        out[(fw, model)] = (r1[labelled], r5[labelled])
    return out


def test_shipped_labels_equal_the_published_file(real_json):
    sets = real_sets()
    assert sets.shape == (50_000, 9)
    assert [[int(c) for c in row if c >= 0] for row in sets] == real_json
    assert int((sets[:, 0] >= 0).sum()) == N_REAL == sum(1 for r in real_json if r)


def test_packaging_ships_the_labels_and_licence(repo_root):
    import tomllib

    patterns = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    data = repo_root / "orchestrator" / "data"
    shipped = {p.name for pattern in patterns["orchestrator"] for p in (repo_root / "orchestrator").glob(pattern)}
    assert {"real_labels.json.gz", "REAL_LABELS_LICENSE", "REAL_LABELS.md",
            "imagenet_val_ground_truth.csv.gz"} <= shipped
    assert "Apache License" in (data / "REAL_LABELS_LICENSE").read_text()
    assert "github.com/google-research/reassessed-imagenet" in (data / "REAL_LABELS.md").read_text()


def test_real_ranking_of_the_published_predictions(published_runs, expected):
    started = time.perf_counter()
    rows = run_rank(published_runs, REAL, "none", Console(file=io.StringIO()))
    elapsed = time.perf_counter() - started
    assert len(rows) == 34
    k1 = {(r.result.framework, r.result.model): int(r.result.correct1.sum()) for r in rows}
    for row in rows:
        r = row.result
        e1, e5 = expected[(r.framework, r.model)]
        assert (r.labels, r.n, r.n_images) == ("real", N_REAL, 50_000)
        assert int(r.correct1.sum()) == int(e1.sum()) and int(r.correct5.sum()) == int(e5.sum())
        assert np.array_equal(r.correct1, e1) and np.array_equal(r.correct5, e5)
        assert r.ci1 == wilson(int(e1.sum()), N_REAL) and r.ci5 == wilson(int(e5.sum()), N_REAL)
    counts = [int(expected[(r.result.framework, r.result.model)][0].sum()) for r in rows]
    assert counts == sorted(counts, reverse=True) and [r.rank1 for r in rows] == competition_rank(counts)
    counts5 = [int(expected[(r.result.framework, r.result.model)][1].sum()) for r in rows]
    assert [r.rank5 for r in rows] == competition_rank(counts5)
    for a, b in zip(rows, rows[1:]):
        ea, eb = expected[(a.result.framework, a.result.model)][0], expected[(b.result.framework, b.result.model)][0]
        assert a.p_vs_next == mcnemar_exact(int((ea & ~eb).sum()), int((~ea & eb).sum()))
    # The figures of the report: ReaL Acc@1 of both resnet50s, from the independent counts.
    assert k1[("pytorch", "resnet50")] == 38_398 and k1[("keras", "resnet50")] == 36_116
    assert f"{100 * k1[('pytorch', 'resnet50')] / N_REAL:.3f}" == "81.982"
    assert f"{100 * k1[('keras', 'resnet50')] / N_REAL:.3f}" == "77.110"
    # ReaL forgives some "mistakes": every model scores higher than on the original labels.
    original = {(r.result.framework, r.result.model): r.result.acc1 for r in rank_results(load_results(published_runs)[0])}
    assert all(r.result.acc1 > original[(r.result.framework, r.result.model)] for r in rows)
    assert elapsed < 30, f"ranking 34 x 50,000 predictions with ReaL labels took {elapsed:.1f}s"


def subset_run(src: Path, dest: Path, rows: np.ndarray, rename=lambda p: p) -> Path:
    """A copy of run ``src`` holding only ``rows`` (a --limit or a sample), paths renamed."""
    dest.mkdir(parents=True)
    with np.load(src / "predictions.npz") as z:
        np.savez(dest / "predictions.npz", paths=np.array([rename(p) for p in z["paths"][rows]]),
                 topk_indices=z["topk_indices"][rows], topk_scores=z["topk_scores"][rows])
    run = json.loads((src / "run.json").read_text())
    run["n_images"] = len(rows)
    (dest / "run.json").write_text(json.dumps(run))
    return dest


def test_any_layout_and_subset(published_runs, expected, tmp_path, real_json):
    """Images map by their val number: a flat, deeper or renamed layout and any subset score alike."""
    with np.load(published_runs / "keras-resnet50" / "predictions.npz") as z:
        all_labelled = np.array([bool(real_json[n - 1]) for n in val_numbers(z["paths"].tolist())])
    position = np.cumsum(all_labelled) - 1  # row -> its index among the labelled rows
    rng = np.random.default_rng(1)
    picks = {"limit": np.arange(1000), "sample": np.sort(rng.choice(50_000, 777, replace=False))}
    layouts = {"flat": lambda p: p.split("/")[1], "deep": lambda p: f"val/x/{p.split('/')[1].lower()}",
               "png": lambda p: p.split("/")[1].replace(".JPEG", ".png")}
    for pick_name, rows in picks.items():
        for layout, rename in layouts.items():
            out = tmp_path / f"{pick_name}-{layout}"
            for run in ("pytorch-resnet50", "keras-resnet50"):
                subset_run(published_runs / run, out / run, rows, rename)
            scored = {r.model + r.framework: r for r in load_results(out, REAL)[0]}
            with np.load(out / "keras-resnet50" / "predictions.npz") as z:
                numbers = val_numbers(z["paths"].tolist())
            labelled = np.array([bool(real_json[n - 1]) for n in numbers])
            for fw in ("pytorch", "keras"):
                r = scored["resnet50" + fw]
                # Expected: the full-run vectors restricted to the subset's labelled rows.
                e1_full, _ = expected[(fw, "resnet50")]
                want = e1_full[position[rows[labelled]]]
                assert (r.n, r.n_images) == (int(labelled.sum()), len(rows))
                assert int(r.correct1.sum()) == int(want.sum()) and np.array_equal(r.correct1, want)


def test_paths_without_a_val_number_are_one_line(tmp_path):
    with pytest.raises(LabelError) as err:
        truth_for(["n01440764/ILSVRC2012_val_00000293.JPEG", "n02123045/chelsea.png"], REAL)
    msg = str(err.value)
    assert "n02123045/chelsea.png" in msg and "ILSVRC2012_val_NNNNNNNN" in msg and "\n" not in msg
    assert "without --labels real" in msg
    with pytest.raises(LabelError, match="outside 1..50000"):
        truth_for(["ILSVRC2012_val_00050001.JPEG"], REAL)
    with pytest.raises(LabelError, match="none of the 2 images has a ReaL label"):
        truth_for(["ILSVRC2012_val_00000001.JPEG", "a/ILSVRC2012_val_00000022.JPEG"], REAL)  # both empty lists
    truth = truth_for(["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG",
                       "ILSVRC2012_val_00000026.JPEG"], REAL)
    assert truth.keep.tolist() == [False, True, True] and truth.classes(0) == [970, 795]
    assert truth.classes(1) == [619, 526, 846]
    assert parse_labels("real") == parse_labels("ReaL") == REAL and parse_labels("x.csv") == Path("x.csv")
    assert parse_labels(None) is None


def test_cli_rank_and_report_with_real_labels(published_runs, tmp_path):
    out = tmp_path / "results"
    rows = np.arange(2000)
    for run in ("pytorch-resnet50", "keras-resnet50"):
        subset_run(published_runs / run, out / run, rows)
    proc = zoobench("rank", str(out), "--labels", "real", "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    ranked = json.loads(proc.stdout)
    assert {r["labels"] for r in ranked} == {"real"} and {r["n_images"] for r in ranked} == {2000}
    assert ranked[0]["n"] < 2000 and ranked[0]["model"] == "resnet50"
    table = zoobench("rank", str(out), "--labels", "real", timeout=120)
    assert f"ReaL labels ({ranked[0]['n']} of 2000 images)" in table.stdout and "ReaL Acc@1" in table.stdout
    proc = zoobench("report", str(out), "--labels", "real", "--out", str(tmp_path / "rep"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "results.md").read_text()
    assert f"{ranked[0]['n']} with a ReaL label" in md and "| ReaL Acc@1 % |" in md
    bad = tmp_path / "bad"
    subset_run(published_runs / "pytorch-resnet50", bad / "pytorch-resnet50", rows[:3],
               lambda p: p.replace("ILSVRC2012_val_", "img_"))
    one_line_error(zoobench("rank", str(bad), "--labels", "real", timeout=120), "ILSVRC2012_val_NNNNNNNN")
    one_line_error(zoobench("rank", str(out), "--labels", str(tmp_path / "none.csv"), timeout=120), "none.csv")


def test_real_table_fits_80_columns(published_runs):
    buf = io.StringIO()
    run_rank(published_runs, REAL, "table", Console(file=buf, width=80))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    data = [line for line in lines if line.strip().split(" ")[0].isdigit()]
    assert len(data) == 34 and "ReaL@1" in buf.getvalue()
