"""Robustness sets end to end with real containers: a V2-style integer-folder copy of the sample gives the
predictions of the wnid layout; ImageNet-R's 200-class restriction and its clean reference; Lite0 over a
generated ImageNet-C of the sample ranks, is labelled generated, and its accuracy falls with severity."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, zoobench
from zoobench_contract.classsets import load_subset
from zoobench_contract.imagenet import wnid_to_index
from zoobench_contract.outputs import read_predictions

pytestmark = pytest.mark.docker
LITE = ["--profile", "sample", "--model", "pytorch/efficientnet_lite0"]


def predictions(run: Path) -> dict[str, np.ndarray]:
    return read_predictions(run / "predictions.npz")


@pytest.fixture(scope="module")
def bench(image_tags, sample_dir, tmp_path_factory):
    """One results folder: Lite0 (PyTorch) on the sample (val), on its ImageNet-R classes (clean and as an
    ImageNet-R copy), on a V2-style copy, and on a generated ImageNet-C of it (all 15 x 5)."""
    root = tmp_path_factory.mktemp("robust")
    results = root / "results"
    zoobench("run", *LITE, "--results", str(results), check=True)
    return root, results


def test_v2_integer_folders_give_the_predictions_of_the_wnid_layout(bench, sample_dir):
    root, results = bench
    raw = root / "v2-raw" / "imagenetv2-matched-frequency-format-val"
    for src in sorted(sample_dir.glob("n*/*")):
        dest = raw / str(wnid_to_index()[src.parent.name]) / src.name  # ImageNet-V2's integer folders
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    refused = zoobench("run", *LITE, "--results", str(results), "--dataset", "imagenet-v2", "--data", str(raw))
    one_line_error(refused, "integer class folders")
    prepared = root / "v2"
    proc = zoobench("data", "prepare", "--dataset", "imagenet-v2", "--from", str(raw.parent), "--out", str(prepared),
                    "--allow-incomplete")
    assert proc.returncode == 0, proc.stderr
    proc = zoobench("run", *LITE, "--results", str(results), "--dataset", "imagenet-v2", "--data", str(prepared))
    assert proc.returncode == 0, proc.stderr
    val, v2 = predictions(results / "pytorch-efficientnet_lite0"), predictions(results / "imagenet-v2" /
                                                                            "pytorch-efficientnet_lite0")
    np.testing.assert_array_equal(v2["paths"], val["paths"])
    np.testing.assert_array_equal(v2["topk_indices"], val["topk_indices"])
    np.testing.assert_array_equal(v2["topk_scores"], val["topk_scores"])
    run = json.loads((results / "imagenet-v2" / "pytorch-efficientnet_lite0" / "run.json").read_text())
    assert run["dataset"] == "imagenet-v2" and run["classes"] is None


def test_imagenet_r_is_scored_on_its_200_classes_with_a_clean_reference(bench, sample_dir):
    root, results = bench
    subset = load_subset("imagenet-r")
    r_copy = root / "imagenet-r"
    for src in sorted(sample_dir.glob("n*/*")):
        if src.parent.name in subset.wnids:  # the sample's tabby, espresso and missile
            (r_copy / src.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, r_copy / src.parent.name / src.name)
    for args in (["--dataset", "imagenet-r-clean"], ["--dataset", "imagenet-r", "--data", str(r_copy)]):
        proc = zoobench("run", *LITE, "--results", str(results), *args)
        assert proc.returncode == 0, proc.stderr
    clean = results / "imagenet-r-clean" / "pytorch-efficientnet_lite0"
    shifted = results / "imagenet-r" / "pytorch-efficientnet_lite0"
    for run_dir in (clean, shifted):
        pred = predictions(run_dir)
        assert len(pred["paths"]) == 3 and set(pred["topk_indices"].ravel()) <= set(subset.indices)
        run = json.loads((run_dir / "run.json").read_text())
        assert run["classes"] == {"name": "imagenet-r", "n": 200, "sha256": subset.sha256}
    assert json.loads((clean / "run.json").read_text())["data"]["subset_images"] is True
    table = json.loads(zoobench("robustness", str(results), "--format", "json", check=True).stdout)
    text = json.dumps(table)
    assert "imagenet-r" in text and "imagenet-r-clean" in text


def test_generated_imagenet_c_ranks_and_accuracy_falls_with_severity(bench, sample_dir):
    root, results = bench
    corrupted = root / "c"
    zoobench("data", "corrupt", "--data", str(sample_dir), "--out", str(corrupted), check=True, timeout=1800)
    assert len(list(corrupted.glob("*/*/n*/*.JPEG"))) == 15 * 5 * 6
    proc = zoobench("run", *LITE, "--results", str(results), "--dataset", "imagenet-c", "--data", str(corrupted),
                    "--format", "json")
    assert proc.returncode == 0, proc.stderr
    run_dir = results / "imagenet-c-generated" / "pytorch-efficientnet_lite0"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["dataset"] == "imagenet-c" and run["data"]["generated"]["corruptions"]
    assert run["preprocessing"]["resize_size"] == run["preprocessing"]["crop_size"] == 224  # Hendrycks: crop only
    pred = predictions(run_dir)
    assert len(pred["paths"]) == 450 and all(p.count("/") == 3 for p in pred["paths"])
    right = pred["topk_indices"][:, 0] == [wnid_to_index()[p.split("/")[2]] for p in pred["paths"]]
    acc = {}
    for path, ok in zip(pred["paths"], right):
        corruption, severity = path.split("/")[:2]
        acc.setdefault(corruption, {}).setdefault(int(severity), []).append(ok)
    falls = [c for c, by in acc.items() if np.mean(by[1]) > np.mean(by[5])]
    assert len(acc) == 15 and len(falls) >= 8, {c: {s: np.mean(v) for s, v in by.items()} for c, by in acc.items()}
    assert np.mean([np.mean(by[1]) for by in acc.values()]) > np.mean([np.mean(by[5]) for by in acc.values()])
    ranked = zoobench("rank", str(results), "--format", "json", check=True).stdout
    assert "imagenet-c" in ranked and "generated" in ranked
    table = zoobench("robustness", str(results), "--format", "json", check=True).stdout
    assert "mce" in table.lower() and "generated" in table
    again = zoobench("run", *LITE, "--results", str(results), "--dataset", "imagenet-c", "--data", str(corrupted))
    assert again.returncode == 0 and "reused" in again.stderr, again.stderr
