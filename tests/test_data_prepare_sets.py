"""`data prepare --dataset NAME --from PATH`: V2, R, A, Sketch and C from archives as their authors ship them.

Tiny archives of real JPEG/PNG bytes (the sample photos, and small JPEGs where a set needs 200 classes),
a manifest folder whose known totals are cut down so the counts check can be complete or name what is
missing, and the real CLI as a subprocess for exit codes and one-line errors.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import ROOT, one_line_error, tar_of, zoobench
from orchestrator.data import val_ground_truth
from orchestrator.data.counts import count_check
from orchestrator.data.datasets import load_datasets
from orchestrator.data.layouts import Layout, Placed
from orchestrator.data.prepare_sets import prepare_from, prepare_set
from orchestrator.data.sample import make_sample
from zoobench_contract.classsets import load_subset
from zoobench_contract.dataset import DataError
from zoobench_contract.imagenet import wnids

R_WNIDS = load_subset("imagenet-r").wnids
A_WNIDS = load_subset("imagenet-a").wnids


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[bytes]:
    """The six sample photos' bytes (four JPEG, two PNG), each different."""
    folder = tmp_path_factory.mktemp("sample")
    make_sample(folder)
    found = [p.read_bytes() for p in sorted(folder.rglob("*")) if p.suffix.lower() in (".jpg", ".png")]
    assert len(found) == 6 and len(set(found)) == 6
    return found


def small_jpeg(k: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (k % 256, (k * 7) % 256, 90)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def manifests(tmp_path) -> Path:
    """manifests/*.yaml with known totals small enough for a test."""
    folder = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", folder)
    doc = yaml.safe_load((folder / "datasets.yaml").read_text())
    sets = doc["datasets"]
    sets["imagenet-v2"].update(classes=2, per_class=2, images=4)
    sets["imagenet-r"].update(per_class=1, images=200)
    sets["imagenet-a"].update(images=200)
    sets["imagenet-sketch"].update(classes=2, images=3)
    sets["imagenet-c"].update(classes=2, per_class=1, images=2, corruptions=["gaussian_noise", "snow"],
                              extra_corruptions=["spatter"], severities=2)
    (folder / "datasets.yaml").write_text(yaml.safe_dump(doc))
    return folder


def spec(manifests: Path, name: str):
    return load_datasets(manifests).get(name)


def files_below(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- ImageNet-V2: integer folders

def test_v2_integer_folders_are_class_indices_by_numeric_value(tmp_path, manifests, photos):
    assert sorted(["2", "10"]) == ["10", "2"]  # a string sort would give folder 10 class index 0's place
    root = "imagenetv2-matched-frequency-format-val"
    members = {f"{root}/2/a.jpeg": photos[0], f"{root}/2/b.jpeg": photos[1],
               f"{root}/10/a.jpeg": photos[2], f"{root}/10/b.jpeg": photos[3]}
    gz = tmp_path / "imagenetv2-matched-frequency.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "v2"
    name, dataset = spec(manifests, "imagenet-v2")
    report = prepare_set(out, name, dataset, [gz])
    assert files_below(out) == sorted(f"{wnids()[k]}/{f}" for k in (2, 10) for f in ("a.jpeg", "b.jpeg"))
    assert (out / wnids()[2] / "a.jpeg").read_bytes() == photos[0]
    assert (out / wnids()[10] / "b.jpeg").read_bytes() == photos[3]
    assert report.written == 4 and report.problem() is None
    assert "counts: complete: 4 of 4 images, 2 of 2 classes" in report.summary()


def test_v2_class_short_of_per_class_is_named(tmp_path, manifests, photos):
    src = tmp_path / "extracted" / "imagenetv2-matched-frequency-format-val"
    for rel, data in {"2/a.jpeg": photos[0], "2/b.jpeg": photos[1], "10/a.jpeg": photos[2]}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    report = prepare_set(tmp_path / "v2", *spec(manifests, "imagenet-v2"), [tmp_path / "extracted"])
    assert report.written == 3 and report.counts.sets[0].short == [f"{wnids()[10]} (1)"]
    assert f"1 class(es) with fewer than 2 images: {wnids()[10]} (1)" in report.summary()
    assert f"with fewer than 2, first {wnids()[10]} (1)" in report.problem()
    assert report.problem(allow_incomplete=True) is None


# ---------------------------------------------------------------- ImageNet-R and -A: wnid folders

def r_tar(tmp_path: Path, wnid_list, extra: dict[str, bytes] | None = None) -> Path:
    members = {f"imagenet-r/{w}/art_{k}.jpg": small_jpeg(k) for k, w in enumerate(wnid_list)}
    return tar_of(tmp_path / "imagenet-r.tar", {**members, **(extra or {})})


def test_r_counts_name_the_missing_class_and_a_class_outside_the_subset(tmp_path, manifests):
    outside = next(w for w in wnids() if w not in set(R_WNIDS))
    missing = R_WNIDS[17]
    tar = r_tar(tmp_path, [w for w in R_WNIDS if w != missing], {f"imagenet-r/{outside}/x.jpg": small_jpeg(1)})
    out = tmp_path / "r"
    report = prepare_set(out, *spec(manifests, "imagenet-r"), [tar])
    assert report.written == 199 and report.outside == [f"imagenet-r/{outside}/x.jpg"]
    assert not (out / outside).exists() and not (out / missing).exists()
    assert report.counts.sets[0].empty == [missing]
    text = report.summary()
    assert "counts: incomplete: 199 of 200 images, 199 of 200 classes" in text
    assert f"1 class(es) without an image: {missing}" in text
    assert f"1 files of classes imagenet-r does not have (left out): imagenet-r/{outside}/x.jpg" in text
    assert f"1 class(es) without an image, first {missing}" in report.problem()
    assert report.problem(allow_incomplete=True) is None


def test_a_readme_is_not_a_set_file_and_leading_folders_are_found(tmp_path, manifests, photos):
    members = {f"downloads/v1/imagenet-a/{w}/{k}.jpg": small_jpeg(k) for k, w in enumerate(A_WNIDS)}
    members["downloads/v1/imagenet-a/README.txt"] = b"ImageNet-A, see the paper"
    members[f"downloads/v1/imagenet-a/{A_WNIDS[0]}/photo.jpg"] = photos[0]
    tar = tar_of(tmp_path / "imagenet-a.tar", members)
    out = tmp_path / "a"
    report = prepare_set(out, *spec(manifests, "imagenet-a"), [tar])
    assert report.unknown == ["downloads/v1/imagenet-a/README.txt"]
    assert (out / A_WNIDS[0] / "photo.jpg").read_bytes() == photos[0]
    assert report.written == 201 and not (out / "README.txt").exists()
    # 201 images where 200 are known: more than the release holds is a problem, whatever --allow-incomplete
    assert "more than the known 200" in report.problem(allow_incomplete=True)
    (out / A_WNIDS[0] / "photo.jpg").unlink()
    assert count_check(out, *spec(manifests, "imagenet-a")).problem() is None


# ---------------------------------------------------------------- ImageNet-Sketch: a zip, or its folder

def sketch_zip(path: Path, photos: list[bytes]) -> Path:
    w1, w2 = wnids()[0], wnids()[999]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sketch/", b"")
        zf.writestr(f"sketch/{w1}/sketch_1.JPEG", photos[0])
        zf.writestr(f"sketch/{w1}/sketch_2.JPEG", photos[1])
        zf.writestr(f"sketch/{w2}/sketch_1.JPEG", photos[2])
        zf.writestr(f"__MACOSX/sketch/{w1}/._sketch_1.JPEG", b"\x00\x05\x16\x07")
        zf.writestr("../outside.JPEG", photos[3])
        link = zipfile.ZipInfo(f"sketch/{w2}/link.JPEG")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    return path


def test_sketch_zip(tmp_path, manifests, photos):
    out = tmp_path / "work" / "sketch"
    archive = sketch_zip(tmp_path / "ImageNet-Sketch.zip", photos)
    report = prepare_set(out, *spec(manifests, "imagenet-sketch"), [archive])
    w1, w2 = wnids()[0], wnids()[999]
    assert files_below(out) == [f"{w1}/sketch_1.JPEG", f"{w1}/sketch_2.JPEG", f"{w2}/sketch_1.JPEG"]
    assert (out / w2 / "sketch_1.JPEG").read_bytes() == photos[2]
    assert sorted(report.refused) == ["../outside.JPEG", f"sketch/{w2}/link.JPEG"]
    assert not (tmp_path / "work" / "outside.JPEG").exists() and not (tmp_path / "outside.JPEG").exists()
    assert report.unknown == [f"__MACOSX/sketch/{w1}/._sketch_1.JPEG"]
    assert report.counts.complete and "refused" in report.problem()
    again = prepare_set(out, *spec(manifests, "imagenet-sketch"), [archive])
    assert (again.written, again.skipped) == (0, 3)


def test_sketch_folder_hard_links(tmp_path, manifests, photos):
    src = tmp_path / "ImageNet-Sketch" / "sketch"
    for k, (w, f) in enumerate([(wnids()[0], "a.JPEG"), (wnids()[0], "b.JPEG"), (wnids()[5], "a.JPEG")]):
        (src / w).mkdir(parents=True, exist_ok=True)
        (src / w / f).write_bytes(photos[k])
    (tmp_path / "secret.JPEG").write_bytes(photos[4])
    os.symlink(tmp_path / "secret.JPEG", src / wnids()[5] / "b.JPEG")  # out of the source folder: refused
    out = tmp_path / "sketch"
    report = prepare_set(out, *spec(manifests, "imagenet-sketch"), [tmp_path / "ImageNet-Sketch"], link=True)
    assert report.linked == 3 and report.refused == [f"sketch/{wnids()[5]}/b.JPEG"]
    assert not (out / wnids()[5] / "b.JPEG").exists() and "outside" in report.problem()
    (src / wnids()[5] / "b.JPEG").unlink()
    report = prepare_set(out, *spec(manifests, "imagenet-sketch"), [tmp_path / "ImageNet-Sketch"], link=True)
    assert report.skipped == 3 and report.problem() is None
    assert os.path.samefile(out / wnids()[5] / "a.JPEG", src / wnids()[5] / "a.JPEG")
    with pytest.raises(DataError, match="--link needs folder sources"):
        prepare_set(out, *spec(manifests, "imagenet-sketch"), [sketch_zip(tmp_path / "s.zip", photos)], link=True)


def test_truncated_zip_is_one_line(tmp_path, manifests, photos):
    whole = sketch_zip(tmp_path / "ImageNet-Sketch.zip", photos).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.zip: not a readable zip archive") as err:
        prepare_set(tmp_path / "out", *spec(manifests, "imagenet-sketch"), [cut])
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- ImageNet-C: several tars

def c_members(corruption: str, severities, photos) -> dict[str, bytes]:
    return {f"{corruption}/{s}/{w}/ILSVRC2012_val_0000000{k}.JPEG": photos[k]
            for s in severities for k, w in enumerate((wnids()[1], wnids()[2]))}


def test_c_tars_counts_name_a_missing_corruption_severity(tmp_path, manifests, photos):
    noise = tar_of(tmp_path / "noise.tar", c_members("gaussian_noise", (1, 2), photos))
    weather = tar_of(tmp_path / "weather.tar", {**c_members("snow", (1,), photos),
                                                f"frostbite/1/{wnids()[1]}/x.JPEG": photos[0]})
    extra = tar_of(tmp_path / "extra.tar", c_members("spatter", (1, 2), photos))
    out = tmp_path / "c"
    name, dataset = spec(manifests, "imagenet-c")
    report = prepare_set(out, name, dataset, [noise, weather, extra])
    assert report.written == 10 and report.unknown == [f"frostbite/1/{wnids()[1]}/x.JPEG"]
    assert (out / "snow" / "1" / wnids()[2] / "ILSVRC2012_val_00000001.JPEG").read_bytes() == photos[1]
    counts = report.counts
    assert counts.missing_sets == ["snow/2"] and counts.extra_sets == ["spatter/1", "spatter/2"]
    assert "counts: 5 of 6 corruption x severity sets complete" in report.summary()
    assert "1 set(s) missing: snow/2" in report.summary()
    assert "1 corruption x severity set(s) missing, first snow/2" in report.problem()
    assert report.problem(allow_incomplete=True) is None
    assert Layout(name, dataset).place("frostbite/1/n01440764/x.JPEG").reason.startswith(
        "corruption 'frostbite' is not one of imagenet-c's")

    (out / "snow" / "2" / wnids()[1]).mkdir(parents=True)
    (out / "snow" / "2" / wnids()[1] / "a.JPEG").write_bytes(photos[0])
    again = count_check(out, name, dataset)
    assert again.missing_sets == [] and [s.name for s in again.incomplete] == ["snow/2"]
    assert again.incomplete[0].empty == [] and "1 of 2 images, 1 of 2 classes in snow/2" in again.problem()


def test_c_tar_given_as_a_wnid_set_is_refused_as_two_copies(tmp_path, manifests, photos):
    noise = tar_of(tmp_path / "noise.tar", c_members("gaussian_noise", (1, 2), photos))
    report = prepare_set(tmp_path / "s", *spec(manifests, "imagenet-sketch"), [noise])
    assert report.written == 2 and len(report.conflicts) == 2
    assert "is in two folders, gaussian_noise/1/ and gaussian_noise/2/" in report.problem()


def test_folder_holding_two_sets_is_refused_before_writing(tmp_path, manifests):
    shared = sorted(set(R_WNIDS) & set(A_WNIDS))[0]
    for root in ("imagenet-a", "imagenet-r"):
        (tmp_path / "data" / root / shared).mkdir(parents=True)
        (tmp_path / "data" / root / shared / "x.jpg").write_bytes(small_jpeg(3))
    with pytest.raises(DataError, match=f"{shared} is in two folders, imagenet-a/ and imagenet-r/"):
        prepare_set(tmp_path / "out", *spec(manifests, "imagenet-r"), [tmp_path / "data"])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- unsafe archives, truncation, resume

def test_tar_slip_members_are_refused_and_not_written(tmp_path, manifests, photos):
    wnid = R_WNIDS[0]
    path = tmp_path / "in" / "imagenet-r.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        for name in (f"imagenet-r/{wnid}/ok.jpg", "/tmp/abs.jpg", f"imagenet-r/../../{wnid}/up.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(photos[0])
            tar.addfile(info, io.BytesIO(photos[0]))
        for kind, name, target in ((tarfile.SYMTYPE, f"imagenet-r/{wnid}/sym.jpg", "/etc/passwd"),
                                   (tarfile.LNKTYPE, f"imagenet-r/{wnid}/hard.jpg", "etc/passwd")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    out = tmp_path / "out"
    report = prepare_set(out, *spec(manifests, "imagenet-r"), [path])
    assert files_below(out) == [f"{wnid}/ok.jpg"]
    assert sorted(report.refused) == sorted(["/tmp/abs.jpg", f"imagenet-r/../../{wnid}/up.jpg",
                                             f"imagenet-r/{wnid}/sym.jpg", f"imagenet-r/{wnid}/hard.jpg"])
    assert not (tmp_path / wnid).exists() and not Path("/tmp/abs.jpg").exists()
    assert report.reasons[f"imagenet-r/{wnid}/sym.jpg"].endswith(
        "a symbolic link member (to /etc/passwd); refused, nothing written")
    proc = zoobench("data", "prepare", "--dataset", "imagenet-r", "--from", str(path), "--out", str(out),
                    "--manifests", str(manifests), "--allow-incomplete", timeout=300)
    one_line_error(proc, "4 archive member(s) or link(s) refused (first: ", 1)
    assert "already in place 1" in proc.stdout


def test_truncated_tar_is_one_line_exit_2(tmp_path, manifests):
    whole = r_tar(tmp_path, R_WNIDS[:5])
    with tarfile.open(whole) as tar:
        inside_third = tar.getmembers()[2].offset_data + 50
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:inside_third])
    with pytest.raises(DataError, match="cut.tar: archive is damaged or truncated after 3 files") as err:
        prepare_set(tmp_path / "out", *spec(manifests, "imagenet-r"), [cut])
    assert "\n" not in str(err.value)
    proc = zoobench("data", "prepare", "--dataset", "imagenet-r", "--from", str(cut), "--out", str(tmp_path / "o"),
                    "--manifests", str(manifests), timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cut.tar: archive is damaged or truncated" in proc.stderr


def test_truncated_gzip_tar_is_one_line(tmp_path, manifests):
    gz = tmp_path / "imagenetv2-matched-frequency.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        for k in range(40):
            data = os.urandom(2000)  # incompressible, so the cut falls inside the members
            info = tarfile.TarInfo(f"v2/{k % 2}/{k}.jpeg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.tar.gz: archive is damaged or truncated after") as err:
        prepare_set(tmp_path / "out", *spec(manifests, "imagenet-v2"), [cut])
    assert "\n" not in str(err.value)


def test_rerun_skips_identical_files(tmp_path, manifests):
    tar = r_tar(tmp_path, R_WNIDS)
    out = tmp_path / "r"
    first = prepare_set(out, *spec(manifests, "imagenet-r"), [tar])
    assert first.written == 200 and first.problem() is None
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    (out / R_WNIDS[0] / "art_0.jpg").write_bytes(b"stale")
    again = prepare_set(out, *spec(manifests, "imagenet-r"), [tar])
    assert (again.written, again.skipped, again.replaced) == (1, 199, [f"{R_WNIDS[0]}/art_0.jpg"])
    assert {p: m for p, m in mtimes.items() if p.parent.name != R_WNIDS[0]} == {
        p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != R_WNIDS[0]}
    assert not [p for p in out.rglob(".*")]  # no temp files left


# ---------------------------------------------------------------- counts on any folder, the CLI

def test_count_check_on_a_val_folder_for_a_clean_subset(tmp_path, manifests, photos):
    folder = tmp_path / "val"
    for w in (R_WNIDS[0], next(w for w in wnids() if w not in set(R_WNIDS))):
        (folder / w).mkdir(parents=True)
        (folder / w / "ILSVRC2012_val_00000001.JPEG").write_bytes(photos[0])
    clean = count_check(folder, *spec(manifests, "imagenet-r-clean"))
    assert clean.sets[0].images == 1 and clean.sets[0].short == [f"{R_WNIDS[0]} (1)"]
    assert "the source may be truncated" in clean.problem() and clean.problem(allow_incomplete=True) is None
    r = count_check(folder, *spec(manifests, "imagenet-r"))  # read as a whole: the other class is in the way
    assert r.unexpected == [next(w for w in wnids() if w not in set(R_WNIDS))] and "no part of" in r.problem(True)
    with pytest.raises(DataError, match="read from the prepared val folder"):
        prepare_from(tmp_path / "o", "imagenet-r-clean", [folder], manifests=manifests)


def test_layout_maps_only_set_files():
    name, dataset = load_datasets(ROOT / "manifests").get("imagenet-v2")
    layout = Layout(name, dataset)
    assert layout.place("x/999/f.jpeg") == Placed(f"{wnids()[999]}/f.jpeg", wnids()[999], "x")
    assert [layout.place(p).kind for p in ("x/1000/f.jpeg", "x/007/f.jpeg", "x/7/f.txt", "/7/f.jpeg",
                                           "x/.7/f.jpeg")] == ["unknown", "unknown", "unknown", "unsafe", "unknown"]


def test_cli(tmp_path, manifests, photos):
    tar = r_tar(tmp_path, R_WNIDS[:3])
    out = tmp_path / "r"
    args = ("data", "prepare", "--dataset", "imagenet-r", "--from", str(tar), "--out", str(out),
            "--manifests", str(manifests))
    proc = zoobench(*args, timeout=300)
    one_line_error(proc, f"imagenet-r in {out} is incomplete: 3 of 200 images, 3 of 200 classes, "
                         f"197 class(es) without an image, first {R_WNIDS[3]}", 1)
    assert "prepared imagenet-r in" in proc.stdout and "written 3" in proc.stdout
    proc = zoobench(*args, "--allow-incomplete", timeout=300)
    assert proc.returncode == 0 and "already in place 3" in proc.stdout and not proc.stderr.strip()

    # --dataset imagenet-val --from a tar is the val code, as --val-tar
    names = sorted(val_ground_truth())[:2]
    val_tar = tar_of(tmp_path / "ILSVRC2012_img_val.tar", {n: photos[k] for k, n in enumerate(names)})
    proc = zoobench("data", "prepare", "--dataset", "imagenet-val", "--from", str(val_tar), "--out",
                    str(tmp_path / "val"), "--allow-incomplete", timeout=300)
    assert proc.returncode == 0 and "written 2" in proc.stdout, proc.stderr
    assert (tmp_path / "val" / val_ground_truth()[names[0]] / names[0]).read_bytes() == photos[0]

    tars = [tar_of(tmp_path / f"{c}.tar", c_members(c, (1, 2), photos)) for c in ("gaussian_noise", "snow")]
    proc = zoobench("data", "prepare", "--dataset", "imagenet-c", "--from", str(tars[0]), "--from", str(tars[1]),
                    "--out", str(tmp_path / "c"), "--manifests", str(manifests), timeout=300)
    assert proc.returncode == 0 and "counts: 4 of 4 corruption x severity sets complete" in proc.stdout, proc.stderr

    for bad, needle in ((("--dataset", "imagenet-q", "--from", str(tar)), "'imagenet-q': unknown dataset"),
                        (("--from", str(tar)), "--from needs --dataset"),
                        (("--dataset", "imagenet-r"), "--dataset imagenet-r needs --from"),
                        (("--dataset", "imagenet-r", "--from", str(tmp_path / "nope.tar")), "nope.tar: no such file"),
                        (("--dataset", "imagenet-a", "--from", str(tar)), "no files of imagenet-a in it")):
        proc = zoobench("data", "prepare", *bad, "--out", str(tmp_path / "x"), "--manifests", str(manifests),
                        timeout=300)
        one_line_error(proc, needle, 2)
