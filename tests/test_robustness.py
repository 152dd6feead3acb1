"""Evaluation sets beyond val: one ranking per set (never one across sets), and `zoobench robustness` on
hand-made results folders whose accuracies are known per corruption and severity: mCE and relative
mCE equal a hand computation with the published AlexNet errors, drops and rank changes, clean pairing
(imagenet-r-clean first, the val run as a noted fallback), generated sets labelled, one-line errors."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import one_line_error, zoobench
from orchestrator.results.ranking import RankError, load_results, rank_results, run_rank
from orchestrator.results.robustness import ALEXNET_CLEAN_ERR, ALEXNET_ERR, GENERATED_NOTE, robustness
from orchestrator.results.robusttables import robustness_csv, robustness_dict, robustness_markdown, run_robustness
from zoobench_contract.imagenet import wnids

W = wnids()
WNIDS = set(W)
# The published AlexNet errors (AugMix imagenet.py), written out here so a changed constant fails.
PUBLISHED = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572, 0.819324,
             0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression"]
PER_CELL = 4  # images per corruption x severity
GENERATED = {"generator": "zoobench data corrupt", "corruptions": CORRUPTIONS, "severities": 5, "seed": 0,
             "per_class": 1}


def topk_for(labels: list[int], right: list[bool]) -> np.ndarray:
    """Top-5 rows: the true class first where ``right``, else five other classes."""
    rows = []
    for y, ok in zip(labels, right):
        others = [(y + 1 + j) % 1000 for j in range(5)]
        rows.append([y] + others[:4] if ok else others)
    return np.array(rows, dtype=np.int64)


def label_of(path: str) -> int:
    """The class of a path: its deepest wnid folder, else its deepest class-number folder (ImageNet-V2)."""
    folders = path.split("/")[:-1]
    wnid = next((p for p in reversed(folders) if p in WNIDS), None)
    return W.index(wnid) if wnid is not None else int(next(p for p in reversed(folders) if p.isdigit()))


def write(results: Path, name: str, paths: list[str], right: list[bool], *, dataset: str | None = None,
          framework: str = "pytorch", model: str = "resnet50", precision: str = "fp32", weights: str = "imagenet",
          generated: dict | None = None, classes: dict | None = None, digest: str | None = None) -> Path:
    """A finished run folder as `zoobench run` writes it, ``right[i]``: image i's top-1 is its class."""
    labels = [label_of(path) for path in paths]
    d = results / name
    d.mkdir(parents=True)
    topk = topk_for(labels, right)
    np.savez(d / "predictions.npz", paths=np.array(paths, dtype=np.str_), topk_indices=topk,
             topk_scores=np.tile(np.linspace(0.5, 0.1, 5, dtype=np.float32), (len(paths), 1)))
    run = {"schema_version": 1, "status": "ok", "framework": framework, "framework_version": "1.0", "model": model,
           "weights": {"kind": weights}, "precision": precision, "device": "cpu", "batch_size": 8,
           "n_images": len(paths), "images_per_second": 100.0, "dataset": dataset, "classes": classes,
           "data": {"root": "/data", "digest": digest or f"sha256:{dataset or 'val'}{'-gen' if generated else ''}",
                    "n_images": len(paths), "limit": None, "generated": generated}}
    (d / "run.json").write_text(json.dumps(run))
    return d


def val_paths(n: int) -> list[str]:
    return sorted(f"{W[i % 7]}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n))


def right_first(k: int, n: int) -> list[bool]:
    return [i < k for i in range(n)]


def c_paths(corruptions: list[str] = CORRUPTIONS, severities: int = 5) -> list[str]:
    return [f"{c}/{s}/{W[j]}/ILSVRC2012_val_{j + 1:08d}.JPEG" for c in corruptions
            for s in range(1, severities + 1) for j in range(PER_CELL)]


def c_right(paths: list[str], k: dict[tuple[str, int], int]) -> list[bool]:
    """The first k[(c, s)] images of each cell right."""
    out = []
    for p in paths:
        c, s, _, name = p.split("/")
        out.append(int(name[15:23]) - 1 < k[(c, int(s))])
    return out


def hand_mce(errors: dict[str, list[float]], clean_err: float) -> tuple[float, float]:
    """mCE and relative mCE the way the papers define them, from per-severity errors."""
    ce = [sum(errors[c]) / (5 * PUBLISHED[i]) for i, c in enumerate(CORRUPTIONS)]
    rel = [(sum(errors[c]) / 5 - clean_err) / (PUBLISHED[i] - 0.4348) for i, c in enumerate(CORRUPTIONS)]
    return sum(ce) / 15, sum(rel) / 15


def text(fn, *args, width: int = 200, **kw) -> str:
    buf = io.StringIO()
    fn(*args, Console(file=buf, width=width), **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- the constants

def test_alexnet_normaliser_is_the_published_one():
    assert list(ALEXNET_ERR) == CORRUPTIONS and list(ALEXNET_ERR.values()) == PUBLISHED
    assert ALEXNET_CLEAN_ERR == 0.4348


# ---------------------------------------------------------------- ImageNet-C

@pytest.fixture()
def c_folder(tmp_path) -> Path:
    """val + ImageNet-C runs of two models with known accuracies per corruption and severity."""
    out = tmp_path / "results"
    vp = val_paths(8)
    write(out, "pytorch-resnet50", vp, right_first(6, 8))  # clean error 0.25
    write(out, "keras-resnet50", vp, right_first(4, 8), framework="keras")  # clean error 0.5
    paths = c_paths(CORRUPTIONS + ["speckle_noise"])
    k_a = {(c, s): (i + s) % 5 for i, c in enumerate(CORRUPTIONS + ["speckle_noise"]) for s in range(1, 6)}
    k_b = {key: 2 for key in k_a}
    write(out / "imagenet-c", "pytorch-resnet50", paths, c_right(paths, k_a), dataset="imagenet-c")
    write(out / "imagenet-c", "keras-resnet50", paths, c_right(paths, k_b), dataset="imagenet-c", framework="keras")
    return out


def test_mce_and_relative_mce_equal_a_hand_computation(c_folder):
    rob = robustness(load_results(c_folder)[0])
    (s,) = rob.corruption
    assert s.complete and s.mce_label == "mCE" and s.extra == ["speckle_noise"] and s.severities == [1, 2, 3, 4, 5]
    rows = {r.identity.framework: r for r in s.rows}
    a, b = rows["pytorch"], rows["keras"]
    errors_a = {c: [1 - ((i + sev) % 5) / PER_CELL for sev in range(1, 6)] for i, c in enumerate(CORRUPTIONS)}
    mce, rel = hand_mce(errors_a, 0.25)
    assert a.mce == pytest.approx(mce, abs=1e-12) and a.relative_mce == pytest.approx(rel, abs=1e-12)
    assert a.errors["gaussian_noise"] == {1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 5: 1.0}
    assert a.ce["fog"] == pytest.approx((0.0 + 1.0 + 0.75 + 0.5 + 0.25) / 5 / 0.819324)
    # Every cell half right: mCE = 0.5 * mean(1 / AlexNet), relative = mean((0.5 - 0.5) / ...) = 0.
    assert b.mce == pytest.approx(0.6467257299919341) and b.relative_mce == pytest.approx(0.0, abs=1e-12)
    assert b.severity_error == {sev: 0.5 for sev in range(1, 6)}
    # The extra corruption has errors, no CE, and stays out of the mCE.
    assert "speckle_noise" in a.errors and "speckle_noise" not in a.ce and len(a.ce) == 15
    assert [r.mce for r in s.rows] == sorted(r.mce for r in s.rows)  # best (lowest) mCE first
    assert a.clean is not None and a.clean.dataset == "imagenet-val" and not a.clean.fallback
    data = robustness_dict(rob)["corruption"][0]
    assert data["comparable"] is True and data["generated"] is False
    first = next(r for r in data["rows"] if r["framework"] == "pytorch")
    assert first["errors"]["snow"]["3"] == pytest.approx(1 - ((7 + 3) % 5) / PER_CELL)
    assert first["clean_error"] == pytest.approx(0.25) and first["mce"] == pytest.approx(mce)


def test_relative_mce_literal(tmp_path):
    """One model, every cell half right, clean error 0.25: relative mCE = mean(0.25 / (AlexNet_c - 0.4348))."""
    out = tmp_path / "r"
    write(out, "pytorch-resnet50", val_paths(4), right_first(3, 4))
    paths = c_paths()
    write(out / "imagenet-c", "pytorch-resnet50", paths, c_right(paths, {(c, s): 2 for c in CORRUPTIONS
                                                                         for s in range(1, 6)}), dataset="imagenet-c")
    (row,) = robustness(load_results(out)[0]).corruption[0].rows
    assert row.mce == pytest.approx(0.6467257299919341) and row.relative_mce == pytest.approx(0.8140428921715143)


def test_partial_mce_is_labelled(tmp_path):
    out = tmp_path / "r"
    write(out, "pytorch-resnet50", val_paths(4), right_first(3, 4))
    three = CORRUPTIONS[:3]
    paths = c_paths(three)
    write(out / "imagenet-c", "pytorch-resnet50", paths, c_right(paths, {(c, s): 1 for c in three
                                                                         for s in range(1, 6)}), dataset="imagenet-c")
    (s,) = robustness(load_results(out)[0]).corruption
    assert not s.complete and s.mce_label == "partial mCE (3 of 15 corruptions)"
    assert s.rows[0].mce == pytest.approx(sum(0.75 / a for a in PUBLISHED[:3]) / 3)
    assert any("partial mCE over 3 of 15" in n for n in s.notes)
    md = robustness_markdown(robustness(load_results(out)[0]))
    assert "partial mCE (3 of 15 corruptions)" in md
    assert robustness_dict(robustness(load_results(out)[0]))["corruption"][0]["comparable"] is False


def test_generated_set_is_labelled_everywhere(c_folder):
    paths = c_paths()
    write(c_folder / "imagenet-c-generated", "pytorch-resnet50", paths,
          c_right(paths, {(c, s): 3 for c in CORRUPTIONS for s in range(1, 6)}), dataset="imagenet-c",
          generated=GENERATED)
    results, _ = load_results(c_folder)
    rob = robustness(results)
    assert [s.eval_set.label for s in rob.corruption] == ["imagenet-c", "imagenet-c (generated)"]
    table = " ".join(text(run_robustness, c_folder, None, "table", width=80).split())
    assert "ImageNet-C (generated): mCE" in table and "Generated set: not comparable with published mCE" in table
    md = robustness_markdown(rob)
    assert "imagenet-c (generated)" in md and GENERATED_NOTE in md
    data = json.loads(text(run_robustness, c_folder, None, "json"))
    gen = data["corruption"][1]
    assert gen["generated"] is True and gen["comparable"] is False and gen["label"] == "imagenet-c (generated)"
    assert any(GENERATED_NOTE in n for n in gen["notes"])
    rows = list(csv.DictReader(io.StringIO(robustness_csv(rob))))
    assert {r["generated"] for r in rows if r["dataset"] == "imagenet-c"} == {"true", "false"}
    # The ranking keeps the generated set apart from the official one.
    rows = rank_results(results)
    assert [(r.result.eval_set.label) for r in rows].count("imagenet-c (generated)") == 1
    ranked = text(run_rank, c_folder, None, "table")
    assert "ImageNet-C (generated) ranking" in ranked and "ImageNet-C ranking" in ranked


# ---------------------------------------------------------------- accuracy sets

def test_drop_and_rank_change(tmp_path):
    out = tmp_path / "r"
    vp = val_paths(10)
    v2 = sorted(f"{k}/{j}.jpeg" for j, k in enumerate((3, 250, 999, 7, 42) * 2))  # class-number folders
    for fw, clean_k, v2_k in (("pytorch", 9, 6), ("keras", 8, 7), ("mxnet", 7, 5)):
        write(out, f"{fw}-resnet50", vp, right_first(clean_k, 10), framework=fw)
        write(out / "imagenet-v2", f"{fw}-resnet50", v2, right_first(v2_k, 10), framework=fw, dataset="imagenet-v2")
    (s,) = robustness(load_results(out)[0]).accuracy
    got = {r.identity.framework: (r.clean.acc1, r.acc1, round(r.drop, 9), r.clean_rank, r.shifted_rank,
                                  r.rank_change) for r in s.rows}
    assert got == {"pytorch": (0.9, 0.6, 0.3, 1, 2, -1), "keras": (0.8, 0.7, 0.1, 2, 1, 1),
                   "mxnet": (0.7, 0.5, 0.2, 3, 3, 0)}
    assert [r.identity.framework for r in s.rows] == ["keras", "pytorch", "mxnet"]  # by shifted Acc@1
    assert s.fit is not None
    table = text(run_robustness, out, None, "table", width=80)
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "2→1" in table and "+1" in table and "30.00" in table


def test_integer_layout_labels(tmp_path):
    """ImageNet-V2's folders are class indices 0..999 (by number, not string order)."""
    out = tmp_path / "r"
    paths = ["12/a.jpeg", "2/b.jpeg", "999/c.jpeg", "100/d.jpeg"]
    d = out / "pytorch-resnet50"
    d.mkdir(parents=True)
    topk = np.array([[12, 1, 3, 4, 5], [2, 1, 3, 4, 5], [0, 1, 3, 4, 5], [10, 1, 3, 4, 5]], dtype=np.int64)
    np.savez(d / "predictions.npz", paths=np.array(paths), topk_indices=topk)
    (d / "run.json").write_text(json.dumps({"schema_version": 1, "status": "ok", "framework": "pytorch",
                                            "model": "resnet50", "weights": {"kind": "imagenet"},
                                            "dataset": "imagenet-v2", "data": {"digest": "sha256:v2"}}))
    (r,) = load_results(out)[0]
    assert r.acc1 == 0.5 and r.eval_set.name == "imagenet-v2"


def test_clean_pairing_prefers_the_class_subset_clean_run(tmp_path):
    out = tmp_path / "r"
    vp = val_paths(10)
    r_paths = sorted(f"{W[i % 3]}/art_{i}.jpg" for i in range(10))
    subset = {"name": "imagenet-r", "n": 200, "sha256": "ab" * 32}
    for fw in ("pytorch", "keras", "mxnet"):
        if fw != "mxnet":
            write(out, f"{fw}-resnet50", vp, right_first(8, 10), framework=fw)
        write(out / "imagenet-r", f"{fw}-resnet50", r_paths, right_first(4, 10), framework=fw, dataset="imagenet-r",
              classes=subset)
    write(out / "imagenet-r-clean", "pytorch-resnet50", vp[:5], right_first(5, 5), dataset="imagenet-r-clean",
          classes=subset)
    rob = robustness(load_results(out)[0])
    (s,) = rob.accuracy
    rows = {r.identity.framework: r for r in s.rows}
    assert (rows["pytorch"].clean.dataset, rows["pytorch"].clean.acc1, rows["pytorch"].clean.fallback) == \
        ("imagenet-r-clean", 1.0, False)
    assert (rows["keras"].clean.dataset, rows["keras"].clean.acc1, rows["keras"].clean.fallback) == \
        ("imagenet-val", 0.8, True)
    assert rows["mxnet"].clean is None and rows["mxnet"].drop is None and rows["mxnet"].clean_rank is None
    assert any("not comparable" in n and "keras resnet50" in n and "imagenet-r-clean" in n for n in rob.notes)
    assert any("no imagenet-r-clean run for 1 model(s) (e.g. mxnet resnet50): no clean" in n for n in rob.notes)
    assert "†" in robustness_markdown(rob)
    # Precision is part of the pairing: a bf16 run does not pair with the fp32 clean runs.
    write(out / "imagenet-r", "pytorch-resnet50-bf16", r_paths, right_first(3, 10), dataset="imagenet-r",
          classes=subset, precision="bf16")
    rob = robustness(load_results(out, mixed_precision=True)[0])
    bf16 = next(r for r in rob.accuracy[0].rows if r.identity.precision == "bf16")
    assert bf16.clean is None and bf16.identity.label == "pytorch resnet50 bf16"


# ---------------------------------------------------------------- one ranking per set

@pytest.fixture()
def two_sets(tmp_path) -> Path:
    out = tmp_path / "results"
    vp = val_paths(10)
    r_paths = sorted(f"{W[i % 3]}/art_{i}.jpg" for i in range(20))
    subset = {"name": "imagenet-r", "n": 200, "sha256": "ab" * 32}
    write(out, "pytorch-resnet50", vp, right_first(9, 10))
    write(out, "keras-resnet50", vp, right_first(7, 10), framework="keras")
    write(out / "imagenet-r", "pytorch-resnet50", r_paths, right_first(5, 20), dataset="imagenet-r", classes=subset)
    # Grouped by what run.json says, not by folder: an ImageNet-R run at the top of the folder.
    write(out, "keras-resnet50-on-r", r_paths, right_first(8, 20), framework="keras", dataset="imagenet-r",
          classes=subset)
    return out


def test_val_and_imagenet_r_are_two_rankings(two_sets):
    results, notes = load_results(two_sets)
    rows = rank_results(results)
    by_set = [(r.result.eval_set.name, r.result.run, r.rank1) for r in rows]
    assert by_set == [("imagenet-val", "pytorch-resnet50", 1), ("imagenet-val", "keras-resnet50", 2),
                      ("imagenet-r", "keras-resnet50-on-r", 1), ("imagenet-r", "imagenet-r/pytorch-resnet50", 2)]
    assert rows[1].p_vs_next is None  # McNemar never across sets
    table = " ".join(text(run_rank, two_sets, None, "table").split())
    assert "ImageNet ranking (10 images)" in table and "ImageNet-Rendition ranking (20 images)" in table
    assert "restricted to the set's classes (imagenet-r, 200 classes)" in table
    data = json.loads(text(run_rank, two_sets, None, "json"))
    assert [(r["dataset"], r["generated"], r["rank1"]) for r in data] == [
        ("imagenet-val", False, 1), ("imagenet-val", False, 2), ("imagenet-r", False, 1), ("imagenet-r", False, 2)]
    rows_csv = list(csv.DictReader(io.StringIO(text(run_rank, two_sets, None, "csv"))))
    assert [r["dataset"] for r in rows_csv] == ["imagenet-val"] * 2 + ["imagenet-r"] * 2
    md = text(run_rank, two_sets, None, "markdown")
    assert md.count("| Rank@1 |") == 2 and "**ImageNet-Rendition ranking (20 images)**" in md


def test_dataset_filter(two_sets):
    only_r = json.loads(text(run_rank, two_sets, None, "json", dataset="imagenet-r"))
    assert {r["dataset"] for r in only_r} == {"imagenet-r"} and len(only_r) == 2
    only_val = json.loads(text(run_rank, two_sets, None, "json", dataset="imagenet-val"))
    assert {r["dataset"] for r in only_val} == {"imagenet-val"}
    with pytest.raises(RankError) as err:
        run_rank(two_sets, None, "json", Console(file=io.StringIO()), dataset="imagenet-a")
    msg = str(err.value)
    assert "no runs of dataset 'imagenet-a'" in msg and "imagenet-val: 2 run(s), imagenet-r: 2 run(s)" in msg
    assert "\n" not in msg


def test_within_a_set_the_checks_still_apply(two_sets):
    r_paths = sorted(f"{W[i % 3]}/other_{i}.jpg" for i in range(20))
    write(two_sets / "imagenet-r", "mxnet-resnet50", r_paths, right_first(5, 20), framework="mxnet",
          dataset="imagenet-r", classes={"name": "imagenet-r", "n": 200, "sha256": "ab" * 32})
    with pytest.raises(RankError, match=r"\(both imagenet-r\) were evaluated on different image sets"):
        load_results(two_sets)
    assert {r.eval_set.name for r in load_results(two_sets, dataset="imagenet-val")[0]} == {"imagenet-val"}


def test_different_class_subsets_are_refused(two_sets):
    r_paths = sorted(f"{W[i % 3]}/art_{i}.jpg" for i in range(20))
    write(two_sets / "imagenet-r", "mxnet-resnet50", r_paths, right_first(5, 20), framework="mxnet",
          dataset="imagenet-r", digest="sha256:imagenet-r")
    with pytest.raises(RankError, match=r"different class subsets \(all 1000 classes vs imagenet-r, 200 classes\)"):
        load_results(two_sets)


# ---------------------------------------------------------------- the command line

def test_cli_robustness_and_one_line_errors(c_folder, tmp_path):
    proc = zoobench("robustness", str(c_folder), "--format", "json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["corruption"]) == 1 and data["alexnet"]["clean_error"] == 0.4348
    proc = zoobench("robustness", str(c_folder), timeout=300, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80 and "Rel. mCE" in proc.stdout
    only_val = tmp_path / "val"
    write(only_val, "pytorch-resnet50", val_paths(4), right_first(3, 4))
    one_line_error(zoobench("robustness", str(only_val), timeout=300), "no runs of a shifted set")
    one_line_error(zoobench("robustness", str(c_folder), "--format", "xml", timeout=300), "unknown format 'xml'")
    one_line_error(zoobench("rank", str(only_val), "--dataset", "imagenet-r", timeout=300),
                   "no runs of dataset 'imagenet-r'")
    proc = zoobench("rank", str(c_folder), "--dataset", "imagenet-c", "--format", "csv", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {r["dataset"] for r in csv.DictReader(io.StringIO(proc.stdout))} == {"imagenet-c"}
