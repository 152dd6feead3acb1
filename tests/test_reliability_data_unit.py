"""Issue #20, round two, data side: special files, Pillow messages, container-user permissions,
labels CSV matching and decoding, and `data prepare` results that are not what was asked for."""
from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, tar_of, zoobench
from orchestrator.bench import datascan
from orchestrator.data import N_VAL, val_ground_truth
from orchestrator.data.check import check
from orchestrator.data.prepare import prepare
from orchestrator.results.labels import LabelError, labels_from_csv, read_label_csv
from zoobench_contract import dataset
from zoobench_contract.dataset import DataError, list_images, read_image

WNID = "n01440764"
AS_ROOT = pytest.mark.skipif(os.getuid() != 0, reason="the containers' user differs from this one only on a root host")


def jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (seed * 40 % 256, 10, 20)).save(path, "JPEG")
    return path


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 10, 20)).save(buf, "JPEG")
    return buf.getvalue()


def val_names(n: int) -> list[str]:
    return sorted(val_ground_truth())[:n]


@pytest.fixture
def with_fifo(tmp_path) -> Path:
    root = tmp_path / "val"
    jpeg(root / WNID / "good.JPEG")
    os.mkfifo(root / WNID / "pipe.JPEG")
    return root


# ---------------------------------------------------------------- 1, 7: FIFOs and other special files

def in_thread(fn, timeout: float = 10):
    """``fn()``'s exception (or None), failing the test when it has not returned within ``timeout``."""
    caught: list[BaseException | None] = [None]

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            caught[0] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "blocked"
    return caught[0]


def test_list_images_names_the_fifo_and_counts_the_others(with_fifo):
    with pytest.raises(DataError) as err:
        list_images(with_fifo)
    assert str(err.value) == (f"{with_fifo / WNID / 'pipe.JPEG'}: is a FIFO, not a regular file; "
                              "only regular files are images, remove it")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(with_fifo / WNID / "a_socket.png"))
        with pytest.raises(DataError, match=r"a_socket.png: is a socket, not a regular file \(1 more such entries\)"):
            list_images(with_fifo)
    finally:
        sock.close()


def test_read_image_never_blocks_on_a_fifo(with_fifo):
    exc = in_thread(lambda: read_image(with_fifo, f"{WNID}/pipe.JPEG"))
    assert isinstance(exc, DataError) and "is a FIFO, not a regular file" in str(exc)
    assert read_image(with_fifo, f"{WNID}/good.JPEG").image.size == (8, 6)


def test_data_check_names_the_fifo_in_one_line(with_fifo):
    proc = zoobench("data", "check", str(with_fifo), timeout=60)
    one_line_error(proc, f"{with_fifo / WNID / 'pipe.JPEG'}: is a FIFO, not a regular file", 2)


def test_run_names_the_fifo_before_any_container(with_fifo, tmp_path):
    proc = zoobench("run", "--data", str(with_fifo), "--results", str(tmp_path / "r"), "--no-build", timeout=60)
    one_line_error(proc, "pipe.JPEG: is a FIFO", 2)


def test_predict_run_names_the_fifo(with_fifo, tmp_path, monkeypatch, capsys):
    from test_contract_cli import NumpyBackend, predict
    from zoobench_contract import cli

    monkeypatch.setattr(cli, "load_backend", NumpyBackend)
    code: list[int] = []
    assert in_thread(lambda: code.append(predict("run", "--model", "linear", "--data", str(with_fifo),
                                                 "--out", str(tmp_path / "out")))) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert code[0] != 0 and len(err) == 1 and "pipe.JPEG: is a FIFO" in err[0] and err[0].startswith("error:")


# ---------------------------------------------------------------- 2: Pillow's messages as sentences

def test_text_named_jpg_is_a_sentence(tmp_path):
    (tmp_path / "a.jpg").write_text("hello world, I am text")
    with pytest.raises(DataError) as err:
        read_image(tmp_path, "a.jpg")
    assert str(err.value) == (f"{tmp_path / 'a.jpg'}: not a readable image (its first bytes b'hello wo' "
                              "are neither JPEG nor PNG); replace or remove it")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4)
    with pytest.raises(DataError, match="not a readable image") as err:
        read_image(tmp_path, "b.png")
    assert "object at 0x" not in str(err.value)


def test_object_reprs_are_stripped_from_other_pillow_messages(tmp_path, monkeypatch):
    jpeg(tmp_path / "a.jpg")

    def broken(fp, *args, **kwargs):
        raise OSError(f"decoder failed on {fp!r}")

    monkeypatch.setattr(dataset.Image, "open", broken)
    with pytest.raises(DataError) as err:
        read_image(tmp_path, "a.jpg")
    assert str(err.value) == f"{tmp_path / 'a.jpg'}: not a readable image (decoder failed on); replace or remove it"


def test_data_check_reports_the_sentence(tmp_path):
    root = tmp_path / "val"
    jpeg(root / WNID / "good.JPEG")
    (root / WNID / "text.JPEG").write_text("hello world")
    proc = zoobench("data", "check", str(root), timeout=60)
    one_line_error(proc, "text.JPEG: not a readable image (its first bytes b'hello wo' are neither JPEG nor PNG)", 1)
    assert "object at 0x" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- 3, 7: readable by the containers' user

def fake_stat(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize("mode, uid, gid, allowed", [
    (0o100644, 0, 0, True),          # others may read
    (0o100640, 0, 0, False),         # group and owner only, neither is 1000
    (0o100400, 1000, 0, True),       # owner read
    (0o100044, 1000, 0, False),      # the owner's bits rule for the owner, even when others may read
    (0o100040, 0, 1000, True),       # group read
    (0o100000, 0, 0, False),         # mode 000
])
def test_allows_follows_the_owner_group_other_rule(mode, uid, gid, allowed):
    assert datascan.allows(fake_stat(mode, uid, gid), 1000, 1000, datascan.READ) is allowed
    assert datascan.allows(fake_stat(mode, uid, gid), 0, 0, datascan.READ)  # root reads everything


def test_reader_access_names_the_file_or_the_folder(tmp_path):
    root = tmp_path / "val"
    good, locked = jpeg(root / WNID / "good.JPEG"), jpeg(root / WNID / "locked.JPEG")
    root.chmod(0o755)
    os.chmod(locked, 0)
    access = datascan.ReaderAccess(root, 12345, 12345)
    assert access.problem(f"{WNID}/good.JPEG", good.stat()) is None
    assert access.problem(f"{WNID}/locked.JPEG", locked.stat()) == (
        "not readable by the containers' user (uid 12345): mode 000; chmod a+r it")
    (root / WNID).chmod(0o700)
    assert datascan.ReaderAccess(root, 12345, 12345).problem(f"{WNID}/good.JPEG", good.stat()) == (
        f"folder {root / WNID} is not listable by the containers' user (uid 12345): mode 700; chmod a+rx it")


@AS_ROOT
def test_scan_as_root_refuses_a_mode_000_file_and_sees_the_chmod(tmp_path):
    root, cache = tmp_path / "val", tmp_path / "cache"
    jpeg(root / WNID / "a.JPEG")
    jpeg(root / WNID / "b.JPEG", 1)
    root.chmod(0o755)
    paths = [f"{WNID}/a.JPEG", f"{WNID}/b.JPEG"]
    assert datascan.scan(root, paths, cache).problems == []
    os.chmod(root / paths[0], 0)
    locked = datascan.scan(root, paths, cache)
    assert locked.problems == [(paths[0], "not readable by the containers' user (uid 1000): mode 000; chmod a+r it")]
    os.chmod(root / paths[0], 0o644)
    again = datascan.scan(root, paths, cache)
    assert again.problems == [] and again.reread == 0  # the permission is checked on every scan, never cached


def test_cache_key_holds_the_mode(tmp_path):
    """A file that failed for a permission reason is read again after a chmod (mtime unchanged)."""
    root, cache = tmp_path / "val", tmp_path / "cache"
    jpeg(root / WNID / "a.JPEG")
    assert datascan.scan(root, [f"{WNID}/a.JPEG"], cache).reread == 1
    assert datascan.scan(root, [f"{WNID}/a.JPEG"], cache).reread == 0
    os.chmod(root / WNID / "a.JPEG", 0o604)  # still readable by everyone, so read, not refused
    assert datascan.scan(root, [f"{WNID}/a.JPEG"], cache).reread == 1


@AS_ROOT
def test_data_check_as_root_names_a_mode_000_file(tmp_path):
    root = tmp_path / "val"
    jpeg(root / WNID / "good.JPEG")
    os.chmod(jpeg(root / WNID / "locked.JPEG", 1), 0)
    root.chmod(0o755)
    assert [i.kind for i in check(root).issues] == ["unreadable"]
    proc = zoobench("data", "check", str(root), timeout=60)
    one_line_error(proc, "locked.JPEG: not readable by the containers' user (uid 1000): mode 000; chmod a+r it", 1)


# ---------------------------------------------------------------- 4, 5: labels CSV

W = ["n01440764", "n01443537", "n01484850"]


def csv_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_csv_rows_match_by_relative_path(tmp_path):
    labels = csv_file(tmp_path, f"filename,wnid\n{W[0]}/a.jpg,{W[1]}\n./{W[2]}/a.jpg,{W[2]}\nb.jpg,{W[0]}\n")
    assert labels_from_csv([f"{W[0]}/a.jpg", f"{W[2]}/a.jpg", "x/b.jpg"], labels).tolist() == [1, 2, 0]


def test_a_bare_name_shared_by_two_files_is_named(tmp_path):
    labels = csv_file(tmp_path, f"filename,wnid\na.jpg,{W[1]}\n")
    with pytest.raises(LabelError) as err:
        labels_from_csv([f"{W[0]}/a.jpg", f"{W[2]}/a.jpg"], labels)
    msg = str(err.value)
    assert f"'{W[0]}/a.jpg'" in msg and f"'{W[2]}/a.jpg'" in msg and "relative" in msg and str(labels) in msg
    assert "\n" not in msg
    assert labels_from_csv([f"{W[0]}/a.jpg"], labels).tolist() == [1]  # unique: still works


def test_two_rows_for_one_bare_path_are_named(tmp_path):
    labels = csv_file(tmp_path, f"filename,wnid\nx/a.jpg,{W[1]}\ny/a.jpg,{W[2]}\n")
    with pytest.raises(LabelError, match="rows 'x/a.jpg' and 'y/a.jpg' could both label 'a.jpg'"):
        labels_from_csv(["a.jpg"], labels)


def test_latin1_csv_is_one_line(tmp_path):
    labels = csv_file(tmp_path, f"filename,wnid\ncaf\xe9.jpg,{W[0]}\n".encode("latin-1"))
    with pytest.raises(LabelError) as err:
        read_label_csv(labels)
    assert str(err.value) == (f"labels CSV {labels}: not UTF-8 text (byte 0xe9 at offset 17); "
                              "save it as UTF-8 CSV with columns filename,wnid")


def test_binary_csv_is_one_line(tmp_path):
    labels = csv_file(tmp_path, b"filename,wnid\n" + b"\x01" * 200_000)  # one endless field
    with pytest.raises(LabelError, match=r"line \d: not CSV text \(field larger .*save it as UTF-8 CSV") as err:
        read_label_csv(labels)
    assert "\n" not in str(err.value)
    png = csv_file(tmp_path, b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(LabelError, match="not UTF-8 text"):
        read_label_csv(png)


def test_rank_names_an_ambiguous_row_and_a_latin1_csv(tmp_path):
    from test_ranking import write_run

    paths = [f"{W[0]}/a.jpg", f"{W[2]}/a.jpg"]
    write_run(tmp_path / "results", "pytorch-resnet50", paths, np.array([[0, 1, 2, 3, 4], [2, 1, 0, 3, 4]]))
    labels = csv_file(tmp_path, f"filename,wnid\na.jpg,{W[0]}\n")
    proc = zoobench("rank", str(tmp_path / "results"), "--labels", str(labels), timeout=120)
    one_line_error(proc, f"row 'a.jpg' matches both '{paths[0]}' and '{paths[1]}'", 2)
    labels.write_text(f"filename,wnid\n{paths[0]},{W[0]}\n{paths[1]},{W[2]}\n")
    proc = zoobench("rank", str(tmp_path / "results"), "--labels", str(labels), "--format", "json", timeout=120)
    assert proc.returncode == 0 and '"n": 2' in proc.stdout, proc.stderr
    labels.write_bytes(f"filename,wnid\ncaf\xe9.jpg,{W[0]}\n".encode("latin-1"))
    proc = zoobench("rank", str(tmp_path / "results"), "--labels", str(labels), timeout=120)
    one_line_error(proc, f"labels CSV {labels}: not UTF-8 text (byte 0xe9 at offset 17)", 2)


# ---------------------------------------------------------------- 6: data prepare

def test_a_val_member_that_is_no_image_is_left_out(tmp_path):
    a, b = val_names(2)
    tar = tar_of(tmp_path / "v.tar", {a: jpeg_bytes(1), b: b"hello world"})
    report = prepare(tmp_path / "val", val_tar=tar)
    assert report.written == 1 and report.not_images == [b]
    assert not (tmp_path / "val" / val_ground_truth()[b] / b).exists()
    assert report.problem(allow_incomplete=True) == (
        f"1 val file(s) left out, not images (first: {tar} member {b}: not a readable image (its first bytes "
        "b'hello wo' are neither JPEG nor PNG); replace or remove it); see the list above")
    proc = zoobench("data", "prepare", "--val-tar", str(tar), "--out", str(tmp_path / "cli"), "--allow-incomplete")
    one_line_error(proc, f"1 val file(s) left out, not images (first: {tar} member {b}", 1)


def test_a_tar_cut_at_a_member_boundary_is_incomplete(tmp_path):
    names = val_names(3)
    whole = tar_of(tmp_path / "v.tar", {n: jpeg_bytes(i) for i, n in enumerate(names)})
    with tarfile.open(whole) as tar:
        boundary = tar.getmembers()[2].offset
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:boundary])
    report = prepare(tmp_path / "val", val_tar=cut)
    assert report.written == 2 and not report.full
    proc = zoobench("data", "prepare", "--val-tar", str(cut), "--out", str(tmp_path / "cli"))
    one_line_error(proc, f"incomplete: 2 of {N_VAL} val images in {tmp_path / 'cli'}", 1)
    assert "the archive may be truncated" in proc.stderr and "written 2" in proc.stdout
    proc = zoobench("data", "prepare", "--val-tar", str(cut), "--out", str(tmp_path / "cli"), "--allow-incomplete")
    assert proc.returncode == 0 and "already in place 2" in proc.stdout and "error" not in proc.stderr


def source_with_links(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A --val-dir holding a real val JPEG, a symlink to it inside, and a symlink to a file outside."""
    a, b, c = val_names(3)
    src, outside = tmp_path / "src", tmp_path / "secret"
    jpeg(src / "real" / a, 1)
    jpeg(outside / "shadow.JPEG", 2).chmod(0o600)
    os.symlink(src / "real" / a, src / b)  # inside: fine
    os.symlink(outside / "shadow.JPEG", src / c)  # outside: refused
    return src, outside, [a, b, c]


def no_hard_links(src, dst) -> None:
    raise OSError(18, "Invalid cross-device link")


@pytest.mark.parametrize("how", ["copy", "hard link", "symlink"])
def test_links_out_of_the_source_are_refused(tmp_path, monkeypatch, how):
    src, outside, (a, b, c) = source_with_links(tmp_path)
    out = tmp_path / "val"
    if how == "symlink":
        monkeypatch.setattr(os, "link", no_hard_links)
    report = prepare(out, val_dir=src, link=how != "copy")
    truth = val_ground_truth()
    assert report.refused_links == [c] and not (out / truth[c] / c).exists()
    assert report.placed == 2 and (out / truth[b] / b).read_bytes() == (src / "real" / a).read_bytes()
    for name in (a, b):
        placed = out / truth[name] / name
        if how == "copy":
            umask = os.umask(0)
            os.umask(umask)
            assert not placed.is_symlink() and stat.S_IMODE(placed.stat().st_mode) == 0o666 & ~umask
        elif how == "hard link":  # to the real file inside the source, never to a symlink
            assert not placed.is_symlink() and os.path.samefile(placed, src / "real" / a)
        else:
            assert os.readlink(placed) == str((src / "real" / a).resolve())
    assert report.problem(allow_incomplete=True) == (
        f"1 symlink(s) out of the source folder refused (first: {src / c} links to "
        f"{(outside / 'shadow.JPEG').resolve()}, outside {src.resolve()}; copy the file into the folder "
        "or remove the link); see the list above")


def test_cli_refuses_a_link_out_of_the_source(tmp_path):
    src, _, (_, _, c) = source_with_links(tmp_path)
    proc = zoobench("data", "prepare", "--val-dir", str(src), "--out", str(tmp_path / "val"), "--allow-incomplete")
    one_line_error(proc, f"1 symlink(s) out of the source folder refused (first: {src / c} links to", 1)


def test_a_fifo_named_like_a_val_image_does_not_block_prepare(tmp_path):
    a, b = val_names(2)
    src = tmp_path / "src"
    jpeg(src / a)
    os.mkfifo(src / b)
    report = in_thread_result(lambda: prepare(tmp_path / "val", val_dir=src))
    assert report.written == 1 and report.not_images == [b]
    assert "is a FIFO, not a regular file" in report.reasons[b]


def in_thread_result(fn, timeout: float = 20):
    result: list = []
    assert in_thread(lambda: result.append(fn()), timeout) is None
    return result[0]


def test_summary_lists_what_was_left_out(tmp_path):
    a, b = val_names(2)
    tar = tar_of(tmp_path / "v.tar", {a: jpeg_bytes(1), b: b"hello world"})
    text = prepare(tmp_path / "val", val_tar=tar).summary()
    assert f"1 val names that are not images (left out): {b}" in text
    assert all(line.startswith(("prepared", "  ")) for line in text.splitlines())
