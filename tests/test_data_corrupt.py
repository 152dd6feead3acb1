"""`zoobench data corrupt`: the ImageNet-C-style set of the sample photos, made as a user makes it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, zoobench
from orchestrator.data.corrupt import STATE_FILE, clean_crop, corruption_lists, output_path
from orchestrator.data.corrupt_cmd import parse_severities, resolve_corruptions
from orchestrator.data.sample import make_sample
from zoobench_contract.dataset import (GENERATED_FILE, DataError, digest_files, file_sha256, list_images, read_image,
                                       set_digest)

BENCHMARK, EXTRA, N_SEVERITIES = corruption_lists()


def corrupt(*args: str) -> subprocess.CompletedProcess:
    """``zoobench data corrupt ARGS`` in a subprocess, as a user runs it."""
    return zoobench("data", "corrupt", *args, timeout=600)


def corrupt_here(capsys, *args: str) -> SimpleNamespace:
    """The same through ``orchestrator.cli.main`` in this process (fast: for the refusals)."""
    from orchestrator.cli import main

    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            main(["data", "corrupt", *args])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=info.value.code, stdout=captured.out, stderr=captured.err)


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (the hidden state file included) by relative path -> bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def images_of(root: Path) -> list[str]:
    return sorted(p for p in tree(root) if p not in (GENERATED_FILE, STATE_FILE))


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corrupt") / "sample"
    make_sample(root)
    return root


@pytest.fixture(scope="module")
def full_set(sample, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The 15 x 5 set of the six sample photos, made once (two workers)."""
    out = tmp_path_factory.mktemp("full") / "imagenet-c"
    proc = corrupt("--data", str(sample), "--out", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_the_manifest_lists_are_the_library_ones():
    from imagecorruptions import get_corruption_names

    assert (BENCHMARK, EXTRA, N_SEVERITIES) == (get_corruption_names("common"), get_corruption_names("validation"), 5)
    assert resolve_corruptions(None, extra=False) == BENCHMARK
    assert resolve_corruptions(None, extra=True) == get_corruption_names("all")
    assert resolve_corruptions(["fog,snow", "fog", "saturate"], extra=False) == ["snow", "fog", "saturate"]


@pytest.mark.parametrize("text, expected", [("1-5", [1, 2, 3, 4, 5]), ("3", [3]), ("1,3,5", [1, 3, 5]),
                                            (" 5, 1-2 ", [1, 2, 5])])
def test_severities_parse(text, expected):
    assert parse_severities(text) == expected


@pytest.mark.parametrize("text", ["0", "6", "1-6", "3-1", "a", "1-", "", "1,,2"])
def test_bad_severities_are_one_line(text):
    with pytest.raises(DataError, match="--severities") as info:
        parse_severities(text)
    assert "\n" not in str(info.value)


def test_clean_crop_follows_torchvision_resize_and_center_crop():
    # 500x375 -> Resize(256): 341x256 (int(256 * 500 / 375) = 341); left = round(117 / 2) = 58 (half to even)
    ramp = np.tile(np.arange(500, dtype=np.uint16) % 256, (375, 1)).astype(np.uint8)
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    crop = clean_crop(image)
    resized = image.resize((341, 256), Image.Resampling.BILINEAR)
    assert crop.size == (224, 224) and crop.mode == "RGB"
    assert np.array_equal(np.asarray(crop), np.asarray(resized)[16:240, 58:282])
    tall = clean_crop(Image.new("L", (300, 451), 7))  # greyscale -> RGB; 256x384, top = round(80) = 80
    assert tall.size == (224, 224) and tall.mode == "RGB" and tall.getpixel((0, 0)) == (7, 7, 7)


def test_all_15_x_5_files_are_224px_jpegs_in_the_layout(full_set, sample):
    out, proc = full_set
    expected = sorted(output_path(rp, c, s) for rp in list_images(sample) for c in BENCHMARK for s in range(1, 6))
    assert len(expected) == 450 and images_of(out) == expected
    assert expected[0] == "brightness/1/n02123045/chelsea.JPEG"
    assert "gaussian_noise/3/n02123045/chelsea.JPEG" in expected
    for relpath in expected:
        with Image.open(out / relpath) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (224, 224), "RGB"), relpath
            assert "exif" not in image.info and not image.getexif(), relpath
    assert "wrote 450, skipped 0" in proc.stdout and "15 corruption(s) x 5 severities" in proc.stdout
    assert "images/s" in proc.stdout


def test_the_marker_says_how_the_set_was_made(full_set, sample):
    out, _ = full_set
    record = json.loads((out / GENERATED_FILE).read_text())
    files = images_of(out)
    assert record == {
        "generator": "imagecorruptions-imaug 1.1.5",
        "recipe": {"resize": 256, "crop": 224, "jpeg_quality": 85},
        "corruptions": BENCHMARK, "severities": [1, 2, 3, 4, 5], "seed": 0, "per_class": None,
        "source": str(sample.resolve()), "source_digest": digest_files(sample, list_images(sample)),
        "n_images": 450, "files_sha256": set_digest((rp, file_sha256(out / rp)) for rp in files),
    }
    assert list_images(out) == files  # a later `predict run` reads exactly these


def test_a_rerun_into_the_same_folder_skips_everything(full_set, sample):
    out, _ = full_set
    before = {p: (out / p).stat().st_mtime_ns for p in tree(out) if p != GENERATED_FILE}
    proc = corrupt("--data", str(sample), "--out", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 0, skipped 450 unchanged" in proc.stdout
    assert {p: (out / p).stat().st_mtime_ns for p in tree(out) if p != GENERATED_FILE} == before


def test_a_fresh_folder_with_other_workers_gets_the_same_bytes(full_set, sample, tmp_path):
    out, _ = full_set
    proc = corrupt("--data", str(sample), "--out", str(tmp_path / "again"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path / "again") == tree(out)  # every image, the marker and the state file


def test_each_file_depends_only_on_itself_not_on_the_selection(full_set, sample, tmp_path):
    out, _ = full_set
    part = tmp_path / "part"
    proc = corrupt("--data", str(sample), "--out", str(part), "--corruptions", "impulse_noise,fog", "--severities",
                   "2,5", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    files = images_of(part)
    assert len(files) == 6 * 2 * 2 and all((part / p).read_bytes() == (out / p).read_bytes() for p in files)


def test_severity_5_is_further_from_the_clean_crop_than_severity_1(full_set, sample):
    out, _ = full_set
    clean = {rp: np.asarray(clean_crop(read_image(sample, rp).image), dtype=np.float64) for rp in list_images(sample)}

    def distance(corruption: str, severity: int) -> float:
        return float(np.mean([np.abs(np.asarray(Image.open(out / output_path(rp, corruption, severity)),
                                                dtype=np.float64) - pixels).mean() for rp, pixels in clean.items()]))

    d1 = {c: distance(c, 1) for c in BENCHMARK}
    d5 = {c: distance(c, 5) for c in BENCHMARK}
    assert all(d > 1.0 for d in d1.values()), d1  # severity 1 is not the clean image
    further = [c for c in BENCHMARK if d5[c] > d1[c]]
    assert len(further) >= 13, {c: (round(d1[c], 1), round(d5[c], 1)) for c in BENCHMARK}


def test_per_class_takes_the_first_n_of_each_class(sample, tmp_path):
    data = tmp_path / "val"
    for wnid, photo in (("n02123045", "n02123045/chelsea.png"), ("n07920052", "n07920052/coffee.png")):
        (data / wnid).mkdir(parents=True)
        for name in ("b.png", "a.png", "c.png"):
            shutil.copyfile(sample / photo, data / wnid / name)
    out = tmp_path / "c"
    proc = corrupt("--data", str(data), "--out", str(out), "--per-class", "1", "--corruptions", "contrast",
                   "--severities", "1")
    assert proc.returncode == 0, proc.stderr
    assert images_of(out) == ["contrast/1/n02123045/a.JPEG", "contrast/1/n07920052/a.JPEG"]
    assert json.loads((out / GENERATED_FILE).read_text())["per_class"] == 1

    Image.new("RGB", (64, 64)).save(data / "loose.jpg")
    one_line_error(corrupt("--data", str(data), "--out", str(tmp_path / "d"), "--per-class", "1"), "loose.jpg")
    assert not (tmp_path / "d").exists()


def test_a_smaller_selection_removes_the_outputs_it_no_longer_has(sample, tmp_path):
    out = tmp_path / "c"
    assert corrupt("--data", str(sample), "--out", str(out), "--corruptions", "contrast,fog", "--severities",
                   "1").returncode == 0
    leftover = out / "fog" / "1" / "n02123045" / ".chelsea.JPEG.x1y2z3.tmp"  # as a SIGKILL leaves one
    leftover.write_bytes(b"half a file")
    proc = corrupt("--data", str(sample), "--out", str(out), "--corruptions", "fog", "--severities", "1")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 0, skipped 6 unchanged, removed 6 stale" in proc.stdout and not leftover.exists()
    assert not (out / "contrast").exists() and all(p.startswith("fog/1/") for p in images_of(out))
    assert json.loads((out / GENERATED_FILE).read_text())["corruptions"] == ["fog"]


@pytest.mark.parametrize("case", ["unknown_corruption", "bad_severity", "out_inside_data", "out_is_data",
                                  "out_holds_other_files", "no_data", "extra_file_in_a_corruption_folder",
                                  "two_sources_one_output"])
def test_refusals_are_one_line_with_exit_2(case, sample, tmp_path, capsys):
    out = tmp_path / "out"
    args, needle = {
        "unknown_corruption": (["--corruptions", "fog,rain"], "rain"),
        "bad_severity": (["--severities", "0-3"], "--severities"),
        "out_inside_data": (["--out", str(sample / "n02123045" / "c")], "inside --data"),
        "out_is_data": (["--out", str(sample)], "inside --data"),
        "out_holds_other_files": ([], "notes.txt"),
        "no_data": (["--data", str(tmp_path / "nowhere")], "nowhere"),
        "extra_file_in_a_corruption_folder": ([], "fog/1/readme.md"),
        "two_sources_one_output": (["--data", str(tmp_path / "dup")], "both would become n02123045/a.JPEG"),
    }[case]
    if case == "two_sources_one_output":
        (tmp_path / "dup" / "n02123045").mkdir(parents=True)
        for name in ("a.png", "a.jpg"):
            Image.new("RGB", (64, 64)).save(tmp_path / "dup" / "n02123045" / name)
    if case == "out_holds_other_files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    if case == "extra_file_in_a_corruption_folder":
        (out / "fog" / "1").mkdir(parents=True)
        (out / "fog" / "1" / "readme.md").write_text("mine")
    defaults = {"--data": str(sample), "--out": str(out)}
    for flag in ("--data", "--out"):
        if flag not in args:
            args = [flag, defaults[flag], *args]
    proc = corrupt_here(capsys, *args)
    one_line_error(proc, needle)
    if case == "unknown_corruption":
        assert "gaussian_noise" in proc.stderr and "saturate" in proc.stderr  # the known ones are listed
    assert not (sample / "n02123045" / "c").exists()


def test_ctrl_c_leaves_no_temp_files_and_a_rerun_resumes(sample, tmp_path):
    many = tmp_path / "many"  # 30 sources x 3 corruptions x 5 severities: Ctrl-C surely lands mid-run
    for src in sorted(sample.glob("n*/*")):
        for k in range(5):
            dest = many / src.parent.name / f"{k}-{src.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    out, total = tmp_path / "c", 30 * 3 * 5
    args = ["data", "corrupt", "--data", str(many), "--out", str(out), "--workers", "2",
            "--corruptions", "zoom_blur,elastic_transform,brightness"]
    exe = Path(sys.executable).with_name("zoobench")
    # SIGINT as a terminal leaves it: a background CI job inherits it ignored, and Python keeps that
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.rglob("*.JPEG"))) < 10:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not (out / GENERATED_FILE).exists()
    done = len(list(out.rglob("*.JPEG")))
    assert 0 < done < total

    again = corrupt(*args[2:])
    assert again.returncode == 0, again.stderr
    skipped = int(again.stdout.split("skipped ")[1].split()[0])
    assert 0 < skipped <= done and f"wrote {total - skipped}, " in again.stdout
    whole = tmp_path / "whole"
    assert corrupt("--data", str(many), "--out", str(whole), *args[6:]).returncode == 0  # never interrupted
    assert len(images_of(out)) == total and (out / GENERATED_FILE).is_file()
    assert all((out / p).read_bytes() == (whole / p).read_bytes() for p in images_of(out))