"""Hardening without containers: the results lock, symlink mounts, the data scan, manifest checks."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.bench import datascan, mounts, runlock
from orchestrator.errors import BenchError
from orchestrator.bench.plan import Job, check_preprocessing, plan_jobs
from orchestrator.bench.runner import finished, publish
from orchestrator.manifests import ManifestError, Profile, load_models
from orchestrator.results.ranking import RankError, load_results
from zoobench_contract.outputs import write_json, write_predictions


# ---------------------------------------------------------------- results lock

def _hold_lock(folder: str, ready, release) -> None:
    with runlock.ResultsLock(Path(folder)):
        ready.set()
        release.wait(30)


def test_second_run_on_a_folder_is_refused_with_the_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(runlock.ResultsBusy) as err:
            runlock.ResultsLock(tmp_path).acquire()
        text = str(err.value)
        assert f"pid {holder.pid}" in text and str(tmp_path) in text and "started" in text
    finally:
        release.set()
        holder.join(30)
    with runlock.ResultsLock(tmp_path) as me:  # released: free again
        assert me.pid == os.getpid()


def test_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path):
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
            "from orchestrator.bench.runlock import ResultsLock; ResultsLock(Path(sys.argv[1])).acquire(); os._exit(9)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).parents[1])])
    assert proc.returncode == 9
    record = json.loads((tmp_path / runlock.LOCK_FILE).read_text())
    notes: list[str] = []
    with runlock.ResultsLock(tmp_path, note=notes.append) as me:
        assert me.run_id != record["run_id"]
    assert len(notes) == 1 and f"pid {record['pid']}" in notes[0] and "no longer running" in notes[0]
    notes.clear()
    with runlock.ResultsLock(tmp_path, note=notes.append):  # a clean release leaves nothing to take over
        pass
    assert notes == []


# ---------------------------------------------------------------- symlinked data

def _jpeg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path, "JPEG")


def test_binds_cover_absolute_and_relative_links_out_of_the_folder(tmp_path):
    store = tmp_path / "store" / "val"
    for i in range(3):
        _jpeg(store / f"x{i}.JPEG", i)
    data = tmp_path / "data"
    (data / "n01440764").mkdir(parents=True)
    os.symlink(store / "x0.JPEG", data / "n01440764" / "a.JPEG")  # absolute, as data prepare --link makes
    os.symlink("../../store/val/x1.JPEG", data / "n01440764" / "b.JPEG")  # relative, leaving the folder
    os.symlink(store, data / "n01443537")  # a linked folder
    _jpeg(data / "n01440764" / "own.JPEG")
    os.symlink("own.JPEG", data / "n01440764" / "inside.JPEG")  # stays inside: no extra mount
    path, binds, dangling = mounts.data_binds(data)
    assert path == os.path.realpath(data) and dangling == []
    assert [(b.source, b.target) for b in binds] == [(path, path), (str(store), str(store))]


def test_dangling_links_are_named_and_protected_paths_refused(tmp_path):
    data = tmp_path / "data" / "n01440764"
    data.mkdir(parents=True)
    os.symlink(tmp_path / "gone.JPEG", data / "a.JPEG")
    _, _, dangling = mounts.data_binds(data.parent)
    assert dangling == ["n01440764/a.JPEG"]
    for bad in ("/", "/usr", "/usr/share/x", "/tmp", "/proc/1", "/opt/venv/lib", "/home"):
        with pytest.raises(mounts.MountError, match="cannot be mounted"):
            mounts.check_target(bad, "data folder")
    for fine in ("/mnt/val", "/data/imagenet", "/tmp/x/val", "/opt/data", "/home/me/val"):
        mounts.check_target(fine, "data folder")


# ---------------------------------------------------------------- data scan (hash once)

def test_scan_names_bad_files_and_rereads_only_changed_ones(tmp_path):
    root, cache = tmp_path / "val", tmp_path / "cache"
    for i in range(3):
        _jpeg(root / "n01440764" / f"{i}.JPEG", i)
    (root / "n01440764" / "empty.JPEG").write_bytes(b"")
    (root / "n01440764" / "text.JPEG").write_text("not an image")
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.JPEG"))
    first = datascan.scan(root, paths, cache)
    assert first.reread == 5
    assert [p for p, _ in first.problems] == ["n01440764/empty.JPEG", "n01440764/text.JPEG"]
    assert "empty file" in first.problems[0][1] and "not a readable image" in first.problems[1][1]
    good = paths[:3]
    digest = first.digest(good)
    second = datascan.scan(root, good, cache)
    assert second.reread == 0 and second.digest(good) == digest
    _jpeg(root / "n01440764" / "1.JPEG", 99)  # rewritten: new size/mtime, new bytes
    third = datascan.scan(root, good, cache)
    assert third.reread == 1 and third.digest(good) != digest


def test_scan_refuses_a_decompression_bomb_sized_png(tmp_path):
    root = tmp_path / "val" / "n01440764"
    root.mkdir(parents=True)
    Image.new("1", (14000, 14000)).save(root / "bomb.png")  # 196 Mpx, a few KB on disk
    assert (root / "bomb.png").stat().st_size < 200_000
    result = datascan.scan(root.parent, ["n01440764/bomb.png"], None)
    assert result.problems and "bomb" in result.problems[0][1].lower()


# ---------------------------------------------------------------- plan checks

SERVED = {"m1": {"preprocessing": {"crop_size": 224, "resize_size": 256}},
          "m2": {"preprocessing": {"crop_size": 224, "resize_size": 256}}}


def test_every_model_option_must_match(tmp_path):
    profile = Profile(models={"img": ["m1", "m2"]})
    models = load_models()
    jobs = plan_jobs(profile, models, {"img": "t"}, lambda i: SERVED, only=["m1", "img/m2"])
    assert [j.model for j in jobs] == ["m1", "m2"]
    with pytest.raises(BenchError, match="--model m3"):
        plan_jobs(profile, models, {"img": "t"}, lambda i: SERVED, only=["m1", "m3"])


def test_preprocessing_override_is_checked_against_the_models_own(tmp_path):
    check_preprocessing("img", "m1", SERVED["m1"]["preprocessing"], {"resize_size": 240})
    with pytest.raises(BenchError, match="models.img/m1.preprocessing"):
        check_preprocessing("img", "m1", SERVED["m1"]["preprocessing"], {"resize_size": 200})


@pytest.mark.parametrize("entry, field", [
    ("preprocessing: {crop_size: 300, resize_size: 256}", "preprocessing"),
    ("preprocessing: {crop_size: '224'}", "preprocessing.crop_size"),
    ("preprocessing: {mode: imagenet}", "preprocessing.mode"),
    ("preprocessing: {mean: [0.5, 0.5]}", "preprocessing.mean"),
    ("memory: lots", "memory"),
])
def test_models_manifest_rejects_bad_settings(tmp_path, entry, field):
    (tmp_path / "models.yaml").write_text(f"models:\n  pytorch/resnet18:\n    {entry}\n")
    with pytest.raises(ManifestError) as err:
        load_models(tmp_path)
    assert f"models.pytorch/resnet18.{field}" in str(err.value) and "models.yaml" in str(err.value)


# ---------------------------------------------------------------- reuse and rank integrity

def _run_folder(folder: Path, indices: np.ndarray) -> None:
    folder.mkdir(parents=True)
    paths = [f"n01440764/{i}.JPEG" for i in range(len(indices))]
    write_predictions(folder / "predictions.npz", paths, indices, np.full(indices.shape, 0.2, np.float32))
    write_json(folder / "run.json", {"schema_version": 1, "status": "ok", "framework": "f", "model": "m",
                                     "weights": {"kind": "random"}, "n_images": len(paths),
                                     "data": {"digest": "sha256:x"}})


def test_a_corrupted_prediction_file_is_never_reused(tmp_path):
    partial, final = tmp_path / "r.partial", tmp_path / "r"
    _run_folder(partial, np.tile(np.arange(5), (2, 1)))
    job = Job("img", "t", "m", "random", 8, 60, {}, None)
    request = job.request("sha256:image", "sha256:data")
    publish(partial, final, request)
    assert finished(final, request)
    assert not finished(final, {**request, "data_digest": "sha256:other"})
    blob = bytearray((final / "predictions.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (final / "predictions.npz").write_bytes(bytes(blob))
    assert not finished(final, request)


def test_rank_refuses_class_indices_outside_imagenet(tmp_path):
    _run_folder(tmp_path / "r", np.array([[0, 1, 2, 3, 1000], [0, 1, 2, 3, 4]]))
    with pytest.raises(RankError, match="class 1000, outside the ImageNet classes 0..999"):
        load_results(tmp_path)


@pytest.mark.parametrize("args, needle", [
    (["run", "--limit", "0"], "--limit"),
    (["run", "--batch-size", "0"], "--batch-size"),
    (["nosuch"], "No such command 'nosuch'"),
    (["rank"], "Missing argument"),
    (["data", "check", "--workers", "zero"], "--workers"),
])
def test_usage_errors_are_one_line_naming_the_option(args, needle):
    from conftest import one_line_error, zoobench

    one_line_error(zoobench(*args), needle)
