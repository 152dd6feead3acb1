"""`prepare` sorts real ILSVRC-2012 val names into synset folders from a tar or a flat folder."""
from __future__ import annotations

import io
import os
import random
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.data import N_VAL, val_ground_truth
from orchestrator.data.prepare import prepare
from zoobench_contract.dataset import DataError

UNKNOWN = ("ILSVRC2012_val_00099999.JPEG", "LOC_synset_mapping.txt")


def jpeg_bytes(seed: int) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (16, 12), tuple(rng.randrange(256) for _ in range(3)))
    img.putpixel((seed % 16, 0), (255 - seed % 256, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def val_files() -> dict[str, tuple[str, bytes]]:
    """Two real val file names from each of three classes: name -> (wnid, JPEG bytes)."""
    by_class: dict[str, list[str]] = {}
    for name, wnid in sorted(val_ground_truth().items()):
        by_class.setdefault(wnid, []).append(name)
    chosen = [w for w in sorted(by_class)[::333]][:3]
    files = {}
    for k, wnid in enumerate(chosen):
        for name in by_class[wnid][:2]:
            files[name] = (wnid, jpeg_bytes(len(files) + 10 * k))
    assert len(files) == 6 and len({w for w, _ in files.values()}) == 3
    return files


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tar_members(val_files) -> dict[str, bytes]:
    members = {name: data for name, (_, data) in val_files.items()}
    members.update({u: b"not an image" for u in UNKNOWN})
    return members


def assert_sorted(out: Path, val_files) -> None:
    for name, (wnid, data) in val_files.items():
        assert (out / wnid / name).read_bytes() == data
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == sorted(f"{w}/{n}" for n, (w, _) in val_files.items())  # no temp files, nothing else


def test_tar_is_sorted_into_synset_folders(tmp_path, val_files):
    tar = write_tar(tmp_path / "ILSVRC2012_img_val.tar", tar_members(val_files))
    out = tmp_path / "val"
    report = prepare(out, val_tar=tar)
    assert_sorted(out, val_files)
    assert (report.written, report.skipped, report.linked) == (6, 0, 0)
    assert sorted(report.unknown) == sorted(UNKNOWN)
    assert len(report.missing) == N_VAL - 6 and report.present == 6 and report.classes == 3
    assert not report.full
    text = report.summary()
    assert all(u in text for u in UNKNOWN) and f"{N_VAL - 6} missing" in text and "incomplete" in text

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare(out, val_tar=tar)
    assert (again.written, again.skipped, again.replaced) == (0, 6, [])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_compressed_tar_read_from_a_pipe(tmp_path, val_files):
    """mode 'r|*' streams: a gzip tar through a FIFO (nothing can seek) works."""
    gz = write_tar(tmp_path / "val.tar.gz", tar_members(val_files), mode="w:gz")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(gz.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    report = prepare(tmp_path / "val", val_tar=fifo)
    writer.join(timeout=10)
    assert report.written == 6
    assert_sorted(tmp_path / "val", val_files)


def test_changed_file_is_replaced(tmp_path, val_files):
    tar = write_tar(tmp_path / "v.tar", tar_members(val_files))
    out = tmp_path / "val"
    name, (wnid, _) = next(iter(val_files.items()))
    (out / wnid).mkdir(parents=True)
    (out / wnid / name).write_bytes(b"stale")
    report = prepare(out, val_tar=tar)
    assert report.replaced == [f"{wnid}/{name}"] and report.written == 6
    assert_sorted(out, val_files)


def test_truncated_tar_is_one_line_error(tmp_path, val_files):
    whole = write_tar(tmp_path / "v.tar", tar_members(val_files))
    with tarfile.open(whole) as tar:
        inside_third_file = tar.getmembers()[2].offset_data + 50
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:inside_third_file])
    with pytest.raises(DataError, match="damaged or truncated") as err:
        prepare(tmp_path / "val", val_tar=cut)
    assert "\n" not in str(err.value)


def flat_folder(tmp_path: Path, val_files) -> Path:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name, (_, data) in val_files.items():
        (flat / name).write_bytes(data)
    (flat / UNKNOWN[0]).write_bytes(b"x")
    return flat


def test_flat_folder_copy(tmp_path, val_files):
    flat = flat_folder(tmp_path, val_files)
    out = tmp_path / "val"
    report = prepare(out, val_dir=flat)
    assert report.written == 6 and report.unknown == [UNKNOWN[0]]
    assert_sorted(out, val_files)
    for name, (wnid, _) in val_files.items():
        assert not os.path.samefile(flat / name, out / wnid / name)
    assert prepare(out, val_dir=flat).skipped == 6


def test_flat_folder_hard_links(tmp_path, val_files):
    flat = flat_folder(tmp_path, val_files)
    out = tmp_path / "val"
    report = prepare(out, val_dir=flat, link=True)
    assert (report.linked, report.written, report.symlinked) == (6, 0, 0)
    for name, (wnid, _) in val_files.items():
        dest = out / wnid / name
        assert not dest.is_symlink() and os.path.samefile(flat / name, dest) and dest.stat().st_nlink == 2
    again = prepare(out, val_dir=flat, link=True)
    assert (again.skipped, again.linked) == (6, 0)


def test_link_falls_back_to_symlink(tmp_path, val_files, monkeypatch):
    flat = flat_folder(tmp_path, val_files)

    def cross_device(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    out = tmp_path / "val"
    report = prepare(out, val_dir=flat, link=True)
    assert (report.symlinked, report.linked) == (6, 0)
    for name, (wnid, data) in val_files.items():
        dest = out / wnid / name
        assert dest.is_symlink() and Path(os.readlink(dest)) == (flat / name).absolute()
        assert dest.read_bytes() == data


def test_out_inside_the_source_is_not_read_back(tmp_path, val_files):
    flat = flat_folder(tmp_path, val_files)
    prepare(flat / "sorted", val_dir=flat)
    again = prepare(flat / "sorted", val_dir=flat)
    assert again.skipped == 6 and again.repeated == []


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one source"),
    ({"val_tar": "missing.tar"}, "missing.tar: no such file"),
    ({"val_dir": "missing_dir"}, "missing_dir: no such folder"),
    ({"val_tar": "t.tar", "val_dir": "d"}, "exactly one source"),
    ({"val_tar": "t.tar", "link": True}, "--link needs --val-dir"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    write_tar(tmp_path / "t.tar", {})
    (tmp_path / "d").mkdir()
    kwargs = {k: (tmp_path / v if isinstance(v, str) else v) for k, v in kwargs.items()}
    with pytest.raises(DataError, match=message) as err:
        prepare(tmp_path / "val", **kwargs)
    assert "\n" not in str(err.value)


def test_source_without_val_images(tmp_path):
    tar = write_tar(tmp_path / "t.tar", {"cat.jpg": b"x"})
    with pytest.raises(DataError, match="no ILSVRC2012 val images"):
        prepare(tmp_path / "val", val_tar=tar)
