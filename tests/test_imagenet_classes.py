"""The class table and the shipped val ground truth agree with the published reference files."""
from __future__ import annotations

import ast
import csv
import subprocess
from collections import Counter
from pathlib import Path

from conftest import require
from orchestrator.data import N_VAL, PER_CLASS, val_ground_truth
from zoobench_contract import imagenet

TORCHVISION_WHEELS = sorted(Path("/opt/pypi-more/files").glob("torchvision-0.29.1-*.whl"))


def test_table_shape_and_order():
    wnids, names = imagenet.wnids(), imagenet.class_names()
    assert len(wnids) == len(names) == 1000
    assert list(wnids) == sorted(set(wnids))
    assert all(imagenet.is_wnid(w) for w in wnids)
    assert not imagenet.is_wnid("n99999999") and not imagenet.is_wnid("tench")
    assert [imagenet.wnid_to_index()[w] for w in wnids] == list(range(1000))


def test_known_classes():
    index, names = imagenet.wnid_to_index(), imagenet.class_names()
    assert names[index["n07920052"]] == "espresso"
    assert names[0] == "tench" and imagenet.wnids()[0] == "n01440764"
    assert names[999] == "toilet tissue" and imagenet.wnids()[999] == "n15075141"
    # the two classes that older lists both call "crane" / "maillot" are told apart by wnid
    assert names[index["n02012849"]].startswith("crane") and names[index["n03126707"]].startswith("crane")
    assert names[index["n03710637"]].startswith("maillot") and names[index["n03710721"]].startswith("maillot")


def test_wnids_match_published_synsets(northcutt_dir):
    published = (northcutt_dir / "imagenet_synsets_sorted.txt").read_text().split()
    assert list(imagenet.wnids()) == published


def test_names_match_torchvision():
    require(bool(TORCHVISION_WHEELS), "torchvision 0.29.1 wheel not in /opt/pypi-more/files")
    src = subprocess.run(["unzip", "-p", str(TORCHVISION_WHEELS[0]), "torchvision/models/_meta.py"],
                         capture_output=True, text=True, check=True).stdout
    tree = ast.parse(src)
    cats = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "_IMAGENET_CATEGORIES")
    assert list(imagenet.class_names()) == cats


def test_ground_truth_matches_published(northcutt_dir):
    truth = val_ground_truth()
    with open(northcutt_dir / "imagenet_val_ground_truth_imagefolder_order.csv", newline="") as f:
        published = {row["filename"]: row["wnid"] for row in csv.DictReader(f)}
    assert truth == published
    assert len(truth) == N_VAL
    assert set(Counter(truth.values()).values()) == {PER_CLASS}
    assert set(truth.values()) == set(imagenet.wnids())
