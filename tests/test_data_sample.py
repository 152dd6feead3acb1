"""The sample set: six real photos shipped in scikit-image / scikit-learn, copied byte for byte."""
from __future__ import annotations

import importlib.util
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from orchestrator.data.check import check
from orchestrator.data.sample import PHOTOS, make_sample
from zoobench_contract.dataset import DataError, list_images
from zoobench_contract.imagenet import class_names, wnid_to_index

EXPECTED = {  # wnid -> ImageNet class name, as the brief chose them
    "n02123045": "tabby", "n07920052": "espresso", "n03773504": "missile",
    "n03785016": "moped", "n03877845": "palace", "n11939491": "daisy",
}


def shipped(photo) -> Path:
    spec = importlib.util.find_spec(photo.module)
    return Path(list(spec.submodule_search_locations)[0], photo.file)


def test_sample_writes_six_labelled_photos(tmp_path):
    out = tmp_path / "sample"
    report = make_sample(out)
    paths = list_images(out)
    assert len(paths) == 6 and sorted(paths) == report.files
    assert {p.split("/")[0] for p in paths} == set(EXPECTED)
    for wnid, name in EXPECTED.items():
        assert class_names()[wnid_to_index()[wnid]] == name
    assert class_names()[wnid_to_index()["n07920052"]] == "espresso"
    for photo in PHOTOS:
        assert (out / photo.relpath).read_bytes() == shipped(photo).read_bytes()  # no re-encoding
    readme = (out / "README.md").read_text()
    for photo in PHOTOS:
        assert photo.file in readme and photo.wnid in readme and photo.licence in readme
    assert f"scikit-image {version('scikit-image')}" in readme and f"scikit-learn {version('scikit-learn')}" in readme
    assert set(report.written) == set(report.files) | {"README.md"}
    result = check(out)
    assert result.ok and result.issues == [] and result.n_classes == 6


def test_sample_is_idempotent_and_fast(tmp_path):
    out = tmp_path / "sample"
    make_sample(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    again = make_sample(out)
    elapsed = time.perf_counter() - t0
    assert again.written == [] and again.removed == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert elapsed < 1.0, f"second make_sample took {elapsed:.2f}s"


def test_damaged_photo_is_rewritten_and_stale_images_removed(tmp_path):
    out = tmp_path / "sample"
    make_sample(out)
    victim = out / PHOTOS[0].relpath
    victim.write_bytes(b"broken")
    (out / "n01440764").mkdir()
    (out / "n01440764" / "old.jpg").write_bytes(b"old")
    report = make_sample(out)
    assert report.written == [PHOTOS[0].relpath] and report.removed == ["n01440764/old.jpg"]
    assert not (out / "n01440764").exists()
    assert victim.read_bytes() == shipped(PHOTOS[0]).read_bytes()


def test_foreign_folder_is_not_touched(tmp_path):
    (tmp_path / "mine.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="already holds other images"):
        make_sample(tmp_path)
    assert (tmp_path / "mine.jpg").read_bytes() == b"precious"
