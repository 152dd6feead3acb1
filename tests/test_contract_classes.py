"""``predict run --classes``: the 200-class restriction of ImageNet-R/-A, checked against a numpy
reference on the saved logits, and the shipped subsets against their published sources."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_contract_cli import NumpyBackend, photo, predict

from zoobench_contract import cli
from zoobench_contract.classsets import class_of, images_of, load_subset, restrict
from zoobench_contract.dataset import DataError
from zoobench_contract.imagenet import wnid_to_index, wnids
from zoobench_contract.outputs import read_predictions

R, A = load_subset("imagenet-r"), load_subset("imagenet-a")


@pytest.fixture
def backend(monkeypatch):
    b = NumpyBackend()
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    return b


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Twelve images: eight in ImageNet-R classes, four in a class outside it (n01440764, tench)."""
    root = tmp_path / "data"
    folders = [R.wnids[0], R.wnids[57], "n01440764"]
    assert "n01440764" not in R.wnids
    for i in range(12):
        folder = root / folders[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        photo(i).save(folder / f"img{i:02d}.JPEG")
    return root


def test_shipped_subsets_are_the_published_lists():
    assert len(R.indices) == len(A.indices) == 200
    assert len(set(R.indices) & set(A.indices)) == 86  # two different lists (the issue: 86 shared)
    assert list(R.indices) == sorted(R.indices) and R.wnids[0] == "n01443537"  # goldfish, timm's first
    assert [wnid_to_index()[w] for w in A.wnids] == list(A.indices)
    assert R.sha256 != A.sha256 and len(R.sha256) == 64


def test_restriction_equals_a_numpy_reference_on_saved_logits(backend, data, tmp_path):
    full, sub = tmp_path / "full", tmp_path / "sub"
    common = ["--model", "linear", "--data", str(data), "--save-logits", "--logits-dtype", "float32", "--batch-size", "5"]
    assert predict("run", *common, "--out", str(full)) == 0
    assert predict("run", *common, "--out", str(sub), "--classes", "imagenet-r", "--dataset", "imagenet-r") == 0
    pf, ps = read_predictions(full / "predictions.npz"), read_predictions(sub / "predictions.npz")
    logits = ps["logits"].astype(np.float64)
    np.testing.assert_array_equal(logits, pf["logits"])  # saved logits are the model's, unrestricted
    keep = np.asarray(R.indices)
    z = logits[:, keep] - logits[:, keep].max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # softmax over the 200 classes only
    order = np.argsort(-p, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ps["topk_indices"], keep[order])  # 1000-class indices
    np.testing.assert_allclose(ps["topk_scores"], np.take_along_axis(p, order, axis=1), rtol=1e-5)
    assert set(ps["topk_indices"].ravel()) <= set(R.indices)
    assert not set(pf["topk_indices"][:, 0]) <= set(R.indices), "the linear model must also pick other classes"
    run = json.loads((sub / "run.json").read_text())
    assert run["classes"] == {"name": "imagenet-r", "n": 200, "sha256": R.sha256}
    assert run["dataset"] == "imagenet-r" and run["data"]["subset_images"] is False
    assert json.loads((full / "run.json").read_text())["classes"] is None


def test_subset_images_reads_only_the_subset_classes(backend, data, tmp_path):
    out = tmp_path / "clean"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out), "--classes", "imagenet-r",
                   "--subset-images") == 0
    paths = list(read_predictions(out / "predictions.npz")["paths"])
    assert len(paths) == 8 and not any(p.startswith("n01440764/") for p in paths)
    assert json.loads((out / "run.json").read_text())["data"]["subset_images"] is True


def test_a_file_of_wnids_or_indices_is_a_subset(backend, data, tmp_path):
    listing = tmp_path / "mine.txt"
    listing.write_text("# my classes\nn01440764\n" + "\n".join(str(i) for i in range(100, 109)) + "\n")
    subset = load_subset(str(listing))
    assert subset.indices == (0, *range(100, 109)) and subset.name == "mine.txt"
    same = tmp_path / "same.txt"
    same.write_text("\n".join(wnids()[i] for i in subset.indices))
    assert load_subset(str(same)).sha256 == subset.sha256  # equal subsets, however written
    out = tmp_path / "out"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out), "--classes", str(listing)) == 0
    assert set(read_predictions(out / "predictions.npz")["topk_indices"].ravel()) <= set(subset.indices)


@pytest.mark.parametrize("text, needle", [("n99999999\n", "line 1: 'n99999999' is neither"),
                                          ("# nothing\n", "no classes listed"),
                                          ("1\n2\n3\n", "3 classes, fewer than --topk 5")])
def test_bad_subsets_are_one_line(backend, data, tmp_path, capsys, text, needle):
    listing = tmp_path / "bad.txt"
    listing.write_text(text)
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o"),
                   "--classes", str(listing)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_subset_images_needs_classes_and_matching_folders(backend, data, tmp_path, capsys):
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o"), "--subset-images") == 2
    assert "--subset-images needs --classes" in capsys.readouterr().err
    only_tench = tmp_path / "tench"
    (only_tench / "n01440764").mkdir(parents=True)
    photo(0).save(only_tench / "n01440764" / "x.JPEG")
    assert predict("run", "--model", "linear", "--data", str(only_tench), "--out", str(tmp_path / "o"),
                   "--classes", "imagenet-a", "--subset-images") == 2
    assert "no image lies in a folder of the 200 classes" in capsys.readouterr().err


def test_helpers():
    assert class_of("gaussian_noise/3/n01443537/x.JPEG") == "n01443537"
    assert class_of("n01443537/deeper/x.JPEG") == "n01443537" and class_of("x.JPEG") is None
    assert images_of(["n01443537/a.jpg", "n01440764/b.jpg"], R) == ["n01443537/a.jpg"]
    logits = np.arange(2000, dtype=np.float32).reshape(2, 1000)
    masked = restrict(logits, R)
    assert np.isneginf(masked[:, 0]).all() and (masked[:, list(R.indices)] == logits[:, list(R.indices)]).all()
    assert restrict(logits, None) is logits
    with pytest.raises(DataError, match="neither a shipped subset"):
        load_subset("imagenet-q")
