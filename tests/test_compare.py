"""`zoobench compare`: two runs image by image, and the agreement matrix per architecture; checked on
the published Keras/PyTorch predictions against counts made here, and on tiny synthetic runs."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import one_line_error, zoobench
from orchestrator.results.architectures import ArchitecturesManifest, load_architectures
from orchestrator.results.compare import agreement_matrices, compare_runs, load_run, one_run, run_compare
from orchestrator.results.labels import REAL
from orchestrator.manifests import ManifestError
from orchestrator.results.ranking import RankError
from orchestrator.results.stats import mcnemar_exact
from test_northcutt import convert, source_files
from zoobench_contract.imagenet import class_names, wnids

W = wnids()


@pytest.fixture(scope="module")
def published_runs(northcutt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("northcutt_compare") / "results"
    yield convert(northcutt_dir, out, flat=False)
    shutil.rmtree(out, ignore_errors=True)


def published_top(northcutt_dir: Path, framework: str, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1, its probability, the top-5 set as rows) straight from the published arrays."""
    preds, probs = np.load(source_files(northcutt_dir, framework, model)[0]), \
        np.load(source_files(northcutt_dir, framework, model)[1]).astype(np.float64)
    best = probs.argmax(axis=1)
    rows = np.arange(len(preds))
    return preds[rows, best], probs[rows, best], preds


@pytest.mark.parametrize("model", ["resnet50", "densenet121"])
def test_keras_vs_pytorch_published(published_runs, northcutt_dir, model):
    c = compare_runs(one_run(published_runs / f"keras-{model}"), one_run(published_runs / f"pytorch-{model}"))
    k1, ks, k5 = published_top(northcutt_dir, "keras", model)
    p1, ps, p5 = published_top(northcutt_dir, "pytorch", model)
    y = np.load(northcutt_dir / "imagenet_val_labels_imagefolder_order.npy")
    assert (c.n_a, c.n_b, c.n_shared, c.n_scored, c.labels) == (50_000, 50_000, 50_000, 50_000, "imagenet")
    assert c.top1_agreement == np.mean(k1 == p1)
    overlap = sum(len(set(a) & set(b)) for a, b in zip(k5.tolist(), p5.tolist()))
    assert c.top5_overlap == pytest.approx(overlap / 250_000, abs=1e-12)
    ka, pa = k1 == y, p1 == y
    assert (c.both_right, c.only_a, c.only_b, c.both_wrong) == (
        int((ka & pa).sum()), int((ka & ~pa).sum()), int((~ka & pa).sum()), int((~ka & ~pa).sum()))
    assert c.p_mcnemar == mcnemar_exact(c.only_a, c.only_b) and c.p_mcnemar < 1e-10
    # The 20 images they disagree on most: top-1 differ, by the sum of both top-1 scores.
    paths = np.array([f"{W[y[i]]}/" for i in range(50_000)])  # only used for the tie order check below
    differ = np.flatnonzero(k1 != p1)
    total = ks[differ] + ps[differ]
    assert len(c.disagreements) == 20
    got = [d.score_a + d.score_b for d in c.disagreements]
    assert got == sorted(got, reverse=True)
    assert got[0] == pytest.approx(np.sort(total)[::-1][0]) and got[-1] == pytest.approx(np.sort(total)[::-1][19])
    first = c.disagreements[0]
    row = differ[np.argmax(total)]
    assert first.path.startswith(paths[row]) and (first.top1_a, first.top1_b) == (k1[row], p1[row])
    assert first.truth == [int(y[row])]
    assert all(d.top1_a != d.top1_b for d in c.disagreements)
    if model == "resnet50":  # the figures of the report
        assert (c.both_right, c.only_a, c.only_b, c.both_wrong) == (32_717, 2_458, 4_814, 10_011)
        assert f"{100 * c.top1_agreement:.2f}" == "75.88" and f"{100 * c.top5_overlap:.2f}" == "63.99"


def test_compare_with_real_labels(published_runs, northcutt_dir, tmp_path):
    real = json.loads((northcutt_dir.parent / "real-labels" / "real.json").read_text())
    c = compare_runs(one_run(published_runs / "keras-resnet50"), one_run(published_runs / "pytorch-resnet50"), REAL)
    k1, _, _ = published_top(northcutt_dir, "keras", "resnet50")
    p1, _, _ = published_top(northcutt_dir, "pytorch", "resnet50")
    import csv

    with (northcutt_dir / "imagenet_val_ground_truth_imagefolder_order.csv").open() as f:
        sets = [set(real[int(r["filename"][15:23]) - 1]) for r in csv.DictReader(f)]
    scored = [i for i, s in enumerate(sets) if s]
    ka = np.array([k1[i] in sets[i] for i in scored])
    pa = np.array([p1[i] in sets[i] for i in scored])
    assert (c.labels, c.n_scored, c.n_shared) == ("real", 46_837, 50_000)
    assert (c.both_right, c.only_a, c.only_b, c.both_wrong) == (
        int((ka & pa).sum()), int((ka & ~pa).sum()), int((~ka & pa).sum()), int((~ka & ~pa).sum()))
    assert c.acc1_b == pytest.approx(38_398 / 46_837)
    assert c.to_dict()["disagreements"][0]["truth_names"] == [class_names()[t] for t in c.disagreements[0].truth]


def test_matrix_on_published(published_runs):
    matrices, notes = agreement_matrices(published_runs, load_architectures())
    by_arch = {m.architecture: m for m in matrices}
    assert set(by_arch) == {"resnet50", "densenet121", "densenet169", "densenet201", "vgg16", "vgg19",
                            "inception_v3"}
    r50 = by_arch["resnet50"]
    assert r50.runs == ["keras-resnet50", "pytorch-resnet50"] and r50.n_shared == [[50_000, 50_000]] * 2
    pair = compare_runs(one_run(published_runs / "keras-resnet50"), one_run(published_runs / "pytorch-resnet50"))
    assert r50.top1[0][1] == r50.top1[1][0] == pair.top1_agreement and r50.top1[0][0] == 1.0
    assert r50.top5[0][1] == pair.top5_overlap
    assert json.loads(json.dumps([m.to_dict() for m in matrices]))[0]["architecture"] == "resnet50"
    # Keras mobilenetV2 (published spelling) has no PyTorch run here: one run, nothing to compare.
    assert any("mobilenet_v2" in n and "one run only" in n for n in notes)
    assert any("keras-inceptionresnetv2" in n or "of no architecture" in n for n in notes)


# ---------------------------------------------------------------- synthetic runs

def tiny_run(root: Path, name: str, paths: list[str], top1: list[int], *, framework: str = "pytorch",
             model: str = "efficientnet_lite0", scores: list[float] | None = None, status: str = "ok") -> Path:
    d = root / name
    d.mkdir(parents=True)
    topk = (np.array(top1)[:, None] + np.array([0, 1, 2, 3, 4])) % 1000
    arrays = {"paths": np.array(paths, dtype=np.str_), "topk_indices": topk.astype(np.int64)}
    if scores is not None:
        arrays["topk_scores"] = np.array(scores, np.float32)[:, None].repeat(5, 1)
    np.savez(d / "predictions.npz", **arrays)
    run = {"schema_version": 1, "status": status, "framework": framework, "framework_version": "1",
           "model": model, "weights": {"kind": "imagenet"}, "n_images": len(paths),
           "data": {"digest": "sha256:" + "0" * 64}}
    (d / "run.json").write_text(json.dumps(run))
    return d


def test_partial_overlap_counts_and_order(tmp_path):
    paths = [f"{W[i]}/img{i}.JPEG" for i in range(6)]
    a = tiny_run(tmp_path, "a", paths, [0, 1, 2, 9, 9, 5], scores=[0.9, 0.9, 0.9, 0.2, 0.8, 0.5])
    b = tiny_run(tmp_path, "b", [paths[5], paths[4], paths[3], paths[0], "n09999999/other.JPEG"],
                 [5, 4, 7, 8, 3], framework="keras", scores=[0.5, 0.9, 0.95, 0.1, 0.4])
    c = compare_runs(load_run(a), load_run(b))
    # Shared: img0 (A right, B wrong), img3 (both wrong, disagree), img4 (B right), img5 (both right).
    assert (c.n_a, c.n_b, c.n_shared) == (6, 5, 4)
    assert (c.both_right, c.only_a, c.only_b, c.both_wrong) == (1, 1, 1, 1)
    assert c.top1_agreement == 0.25 and c.p_mcnemar == 1.0
    # top-5 = top1..top1+4: img0 {0..4} vs {8..12}: 0; img3 {9..13} vs {7..11}: 3; img4 {9..} vs {4..8}: 0; img5: 5.
    assert c.top5_overlap == pytest.approx((0 + 3 + 0 + 5) / 20)
    # Disagreeing images by the sum of both top-1 scores: img3 0.2+0.95, img4 0.8+0.9, img0 0.9+0.1.
    assert [Path(d.path).name for d in c.disagreements] == ["img4.JPEG", "img3.JPEG", "img0.JPEG"]
    assert c.disagreements[0].truth == [4]
    # Without scores: the same images in path order.
    nos = tiny_run(tmp_path, "nos", paths, [0, 1, 2, 9, 9, 5])
    c2 = compare_runs(load_run(nos), load_run(b))
    assert [Path(d.path).name for d in c2.disagreements] == ["img0.JPEG", "img3.JPEG", "img4.JPEG"]
    assert c2.disagreements[0].score_a is None


def test_user_errors(tmp_path):
    a = tiny_run(tmp_path / "x", "a", [f"{W[0]}/a.JPEG"], [0])
    b = tiny_run(tmp_path / "x", "b", [f"{W[0]}/b.JPEG"], [0])
    with pytest.raises(RankError, match=r"share no image path.*same data folder"):
        compare_runs(load_run(a), load_run(b))
    with pytest.raises(RankError, match=r"holds 2 runs.*--matrix"):
        one_run(tmp_path / "x")
    with pytest.raises(RankError, match="does not exist"):
        one_run(tmp_path / "nowhere")
    failed = tiny_run(tmp_path, "failed", [f"{W[0]}/a.JPEG"], [0], status="failed")
    with pytest.raises(RankError, match="status 'failed'.*only finished runs"):
        one_run(failed)
    with pytest.raises(RankError, match="unknown format 'xml'"):
        run_compare(a, a, None, "xml", Console(file=io.StringIO()))
    one_line_error(zoobench("compare", str(a), str(b), timeout=120), "share no image path")
    one_line_error(zoobench("compare", str(a), timeout=120), "compare takes two run folders, got 1")
    one_line_error(zoobench("compare", str(a), str(b), "--matrix", timeout=120), "--matrix takes one results folder")


def test_matrix_synthetic_and_cli(tmp_path):
    paths = [f"{W[i]}/img{i}.JPEG" for i in range(4)]
    res = tmp_path / "res"
    tiny_run(res, "pytorch-efficientnet_lite0", paths, [0, 1, 2, 3])
    tiny_run(res, "keras-efficientnet_lite0", paths, [0, 1, 2, 7], framework="keras")
    tiny_run(res / "old", "mxnet-efficientnet_lite0", paths[:2], [0, 5], framework="mxnet")
    tiny_run(res, "pytorch-resnet18", paths, [0, 1, 2, 3], model="resnet18")
    manifest = ArchitecturesManifest.model_validate(
        {"architectures": {"lite0": {"pytorch": "efficientnet_lite0", "keras": ["EfficientNet_Lite0"],
                                     "mxnet": "efficientnet_lite0"}}})
    (m,), notes = agreement_matrices(res, manifest)
    assert m.runs == ["keras-efficientnet_lite0", "old/mxnet-efficientnet_lite0", "pytorch-efficientnet_lite0"]
    assert m.n_shared == [[4, 2, 4], [2, 2, 2], [4, 2, 4]]
    assert m.top1[0][2] == 0.75 and m.top1[0][1] == 0.5 and m.top1[1][2] == 0.5
    assert m.top5[0][2] == pytest.approx((5 + 5 + 5 + 1) / 20)  # {3..7} vs {7..11}: 1 shared
    assert notes == ["1 run(s) of no architecture in the manifest (e.g. 'pytorch-resnet18'); "
                     "add them to manifests/architectures.yaml to compare them"]
    proc = zoobench("compare", str(res), "--matrix", "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [x["architecture"] for x in json.loads(proc.stdout)] == ["efficientnet_lite0"]
    proc = zoobench("compare", str(res), "--matrix", timeout=120)
    assert proc.returncode == 0 and "efficientnet_lite0: top-1 agreement" in proc.stdout
    proc = zoobench("compare", str(res / "pytorch-efficientnet_lite0"), str(res / "keras-efficientnet_lite0"),
                    "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1_agreement"] == 0.75
    proc = zoobench("compare", str(res / "pytorch-efficientnet_lite0"), str(res / "keras-efficientnet_lite0"),
                    timeout=120)
    assert proc.returncode == 0 and "top-1 agreement" in proc.stdout and "75.00 %" in proc.stdout


@pytest.mark.parametrize("text, fragment", [
    ("architectures: [\n", "line"),
    ("architectures:\n  resnet50: {pytorch: 3}\n", "field architectures.resnet50.pytorch"),
    ("architectures:\n  resnet50: {}\n", "names no framework"),
    ("architectures:\n  a: {pytorch: resnet50}\n  b: {pytorch: ResNet50}\n", "pytorch/ResNet50 is in both 'a' and 'b'"),
    ("architectures: {}\n", "field architectures: empty"),
    ("archs: {}\n", "field architectures: Field required"),
])
def test_bad_architectures_yaml(tmp_path, text, fragment):
    (tmp_path / "architectures.yaml").write_text(text)
    with pytest.raises(ManifestError) as err:
        load_architectures(tmp_path / "architectures.yaml")
    msg = str(err.value)
    assert str(tmp_path / "architectures.yaml") in msg and fragment in msg and "\n" not in msg


def test_bad_yaml_on_the_command_line(tmp_path):
    (tmp_path / "architectures.yaml").write_text("architectures:\n  x: {keras: [1]}\n")
    (tmp_path / "res").mkdir()
    one_line_error(zoobench("compare", str(tmp_path / "res"), "--matrix", "--manifests", str(tmp_path), timeout=120),
                   "architectures.yaml: field architectures.x.keras")


def test_shipped_architectures_cover_the_lite0_and_profiles(repo_root):
    import yaml

    m = load_architectures()
    assert {m.architecture_of(fw, "efficientnet_lite0") for fw in ("pytorch", "keras", "mxnet")} == {"efficientnet_lite0"}
    same = yaml.safe_load((repo_root / "manifests" / "profiles.yaml").read_text())["profiles"]["same-arch"]["models"]
    for i in range(len(same["pytorch"])):  # the same-arch profile lists each architecture at the same position
        archs = {m.architecture_of(fw, same[fw][i]) for fw in ("pytorch", "keras", "mxnet")}
        assert len(archs) == 1 and None not in archs, (i, archs)
    assert m.architecture_of("keras", "mobilenetV2") == "mobilenet_v2"  # the published spelling
