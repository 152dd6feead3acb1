"""`check` names every problem file, never crashes, and hashes the set as `predict run` does."""
from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.data import check as check_mod
from orchestrator.data import val_ground_truth
from orchestrator.data.check import FULL, OTHER, SUBSET, check
from zoobench_contract.dataset import DataError, digest_files, list_images, read_image, set_digest

RNG = np.random.default_rng(0)


def photo(mode: str = "RGB", size=(20, 16)) -> Image.Image:
    rgb = Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    return rgb.convert(mode)


def save(path: Path, img: Image.Image, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def png_rgb48(path: Path, w: int = 8, h: int = 6) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one; it reads it as 8-bit RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16).astype(">u2").tobytes()
    rows = b"".join(b"\x00" + pixels[r * w * 6:(r + 1) * w * 6] for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.fixture()
def messy(tmp_path) -> Path:
    """One of every problem, each in its own file."""
    root = tmp_path / "val"
    a, b, c = "n01440764", "n01443537", "n01484850"
    good = save(root / a / "good.JPEG", photo(), "JPEG")
    shutil.copyfile(good, root / a / "dup.JPEG")
    (root / a / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all")
    whole = io.BytesIO()
    photo(size=(64, 64)).save(whole, "JPEG")
    (root / a / "truncated.JPEG").write_bytes(whole.getvalue()[:300])
    (root / a / "empty.JPEG").write_bytes(b"")
    save(root / b / "cmyk.jpg", photo("CMYK"), "JPEG")
    save(root / b / "grey.jpg", photo("L"), "JPEG")
    save(root / b / "alpha.png", photo("RGBA"), "PNG")
    save(root / c / "palette.png", photo("P"), "PNG")
    save(root / c / "palette_transparent.png", photo("P"), "PNG", transparency=0)
    save(root / c / "deep.png", Image.fromarray(RNG.integers(0, 65536, (10, 12), dtype=np.uint16)), "PNG")
    png_rgb48(root / c / "rgb48.png")
    save(root / c / "png_named.JPEG", photo(), "PNG")
    save(root / "not_a_synset" / "x.jpg", photo(), "JPEG")
    save(root / "loose.jpg", photo(), "JPEG")
    val_name = next(n for n, w in sorted(val_ground_truth().items()) if w != a)
    save(root / a / val_name, photo(), "JPEG")
    return root


def kinds(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for issue in report.issues:
        out.setdefault(issue.kind, set()).add(issue.path)
    return out


def test_every_problem_is_named(messy):
    report = check(messy)
    a, b, c = "n01440764", "n01443537", "n01484850"
    val_name = next(p.name for p in (messy / a).glob("ILSVRC2012_val_*"))
    found = kinds(report)
    assert found["unreadable"] == {f"{a}/corrupt.JPEG", f"{a}/truncated.JPEG", f"{a}/empty.JPEG"}
    assert found["duplicate"] == {f"{a}/good.JPEG", f"{a}/dup.JPEG"} - {sorted([f"{a}/dup.JPEG", f"{a}/good.JPEG"])[0]}
    assert found["cmyk"] == {f"{b}/cmyk.jpg"}
    assert found["greyscale"] == {f"{b}/grey.jpg", f"{c}/deep.png"}
    assert found["alpha"] == {f"{b}/alpha.png", f"{c}/palette_transparent.png"}
    assert found["palette"] == {f"{c}/palette.png", f"{c}/palette_transparent.png"}
    assert found["16bit"] == {f"{c}/deep.png", f"{c}/rgb48.png"}
    assert found["format_mismatch"] == {f"{c}/png_named.JPEG"}
    assert found["not_wnid_folder"] == {"not_a_synset/"}
    assert found["no_class_folder"] == {"loose.jpg"}
    assert found["wrong_folder"] == {f"{a}/{val_name}"}

    details = {i.path: i.detail for i in report.issues if i.kind == "unreadable"}
    assert "empty file (0 bytes)" in details[f"{a}/empty.JPEG"]
    assert "truncated" in details[f"{a}/truncated.JPEG"].lower()
    assert val_ground_truth()[val_name] in next(i.detail for i in report.issues if i.kind == "wrong_folder")

    assert report.n_images == len(list_images(messy)) == 16
    assert report.n_classes == 3 and report.kind == OTHER
    assert not report.ok and {i.kind for i in report.errors} == {"unreadable", "not_wnid_folder", "wrong_folder"}
    assert "cmyk" not in {i.kind for i in report.errors}

    text = report.summary()
    for issue in report.issues:
        assert issue.path in text
    assert "error(s)" in text and "NOT usable" in text
    assert report.to_dict()["n_errors"] == len(report.errors)


def test_digest_equals_what_predict_run_records(messy, tmp_path):
    report = check(messy)
    relpaths = list_images(messy)
    assert report.digest == digest_files(messy, relpaths)
    # predict run hashes the bytes it decodes; on a readable set that is the same value
    clean = tmp_path / "clean"
    for rp in relpaths:
        if not any(i.path == rp and i.kind == "unreadable" for i in report.issues):
            (clean / rp).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(messy / rp, clean / rp)
    clean_paths = list_images(clean)
    decoded = set_digest((rp, read_image(clean, rp).sha256) for rp in clean_paths)
    assert check(clean).digest == decoded == digest_files(clean, clean_paths)
    assert decoded != report.digest


def test_clean_val_subset(tmp_path):
    root = tmp_path / "val"  # not tmp_path itself: mode 700, which the containers' user cannot list
    truth = sorted(val_ground_truth().items())[:3]
    for name, wnid in truth:
        save(root / wnid / name, photo(), "JPEG")
    report = check(root)
    assert report.ok and report.issues == [] and report.kind == SUBSET
    assert report.n_images == 3 and report.n_classes == len({w for _, w in truth})
    assert report.modes == {"RGB": 3}


def test_full_set_is_recognised(tmp_path, monkeypatch):
    """The full-set rule, on a stand-in ground truth of three files."""
    names = {"ILSVRC2012_val_00000001.JPEG": "n01440764", "ILSVRC2012_val_00000002.JPEG": "n01443537",
             "ILSVRC2012_val_00000003.JPEG": "n01443537"}
    monkeypatch.setattr(check_mod, "val_ground_truth", lambda: names)
    monkeypatch.setattr(check_mod, "N_VAL", 3)
    for name, wnid in names.items():
        save(tmp_path / wnid / name, photo(), "JPEG")
    assert check(tmp_path).kind == FULL
    (tmp_path / "n01440764" / "ILSVRC2012_val_00000001.JPEG").unlink()
    assert check(tmp_path).kind == SUBSET


def test_labels_come_from_the_deepest_wnid_folder(tmp_path):
    """As rank labels paths: the deepest folder named like a class, at any depth."""
    name, wnid = sorted(val_ground_truth().items())[0]
    root = tmp_path / "val"
    save(root / "n01440764" / "shots" / "a.jpg", photo(), "JPEG")
    save(root / "batch1" / wnid / name, photo(), "JPEG")
    save(root / "batch1" / "misc" / "b.jpg", photo(), "JPEG")
    report = check(root)
    assert [(i.kind, i.path) for i in report.issues] == [("not_wnid_folder", "batch1/misc/")]
    assert report.n_classes == len({"n01440764", wnid})


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_unusable_folder_is_one_line_error(tmp_path, make):
    target = tmp_path / "val"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    with pytest.raises(DataError) as err:
        check(target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
