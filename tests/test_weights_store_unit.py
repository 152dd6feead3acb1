"""`zoobench weights export/import` through the real CLI, no Docker: real files made here, their sha256
checked, damaged files and garbage manifests refused in one line, nothing left behind on failure,
re-import idempotent; and the contract's mirror URL rewrite (`fetch --mirror`)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, one_line_error, zoobench
from orchestrator.bench import weightstore
from zoobench_contract import mirror

TORCH = "torch/hub/checkpoints"
FILES = {  # path under the weights cache -> content made here (what a fetch would have written)
    f"{TORCH}/resnet18-f37072fd.pth": os.urandom(300_000),
    f"{TORCH}/squeezenet1_1-b8a52dc0.pth": os.urandom(120_000),
    "keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5": os.urandom(50_000),
}
PROFILE = {"description": "weights carried by file", "data": "required",
           "weights": {"pytorch": "imagenet:IMAGENET1K_V1", "keras": "imagenet", "mxnet": "random"},
           "models": {"pytorch": ["resnet18", "squeezenet1_1"], "keras": ["mobilenetv2", "efficientnet_lite0"],
                      "mxnet": ["resnet18_v1"]}}
LISTINGS = {
    "pytorch": [{"name": m, "weights_bundled": False, "weights_files": {"imagenet:IMAGENET1K_V1": f}}
                for m, f in (("resnet18", f"{TORCH}/resnet18-f37072fd.pth"),
                             ("squeezenet1_1", f"{TORCH}/squeezenet1_1-b8a52dc0.pth"))],
    "keras": [{"name": "mobilenetv2", "weights_bundled": False, "weights_files": {
        "imagenet": "keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"}},
              {"name": "efficientnet_lite0", "weights_bundled": True, "weights_files": {}}],
    "mxnet": [{"name": "resnet18_v1", "weights_bundled": False,
               "weights_files": {"imagenet": "mxnet/models/resnet18_v1-a0666292.params"}}],
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), relative path -> content."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def site(tmp_path):
    """A connected machine's manifests (profile `carry`), `predict list` files and weights cache."""
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    (manifests / "profiles.yaml").write_text(yaml.safe_dump({"profiles": {"carry": PROFILE}}))
    listing_args = []
    for image, listing in LISTINGS.items():
        (tmp_path / f"{image}.json").write_text(json.dumps(listing))
        listing_args += ["--models-from", f"{image}={tmp_path / f'{image}.json'}"]
    cache = tmp_path / "connected-cache"
    for rel, data in FILES.items():
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(data)
    return {"manifests": manifests, "listings": listing_args, "cache": cache, "tmp": tmp_path}


def export(site, to: Path, *extra: str, cache: Path | None = None):
    return zoobench("weights", "export", "--profile", "carry", "--to", str(to), "--manifests", str(site["manifests"]),
                    *site["listings"], *extra, env={"ZOOBENCH_WEIGHTS_CACHE": str(cache or site["cache"])}, timeout=120)


def import_(folder: Path, cache: Path):
    return zoobench("weights", "import", str(folder), env={"ZOOBENCH_WEIGHTS_CACHE": str(cache)}, timeout=120)


def test_export_then_import_fills_an_empty_cache_with_the_same_bytes(site):
    out = site["tmp"] / "usb" / "weights"
    proc = export(site, out)
    assert proc.returncode == 0, proc.stderr
    assert "exported 3 weights file(s)" in proc.stderr and "need no file (bundled in the image): 1 (keras/efficientnet_lite0)" in proc.stderr
    assert "need no file (random weights): 1 (mxnet/resnet18_v1)" in proc.stderr
    manifest = json.loads((out / weightstore.MANIFEST_FILE).read_text())
    assert manifest["format"] == "zoobench-weights/1" and manifest["profile"] == "carry"
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        rel: (len(data), sha256(data)) for rel, data in FILES.items()}
    needs = {f["path"]: f["needed_by"] for f in manifest["files"]}
    assert needs[f"{TORCH}/resnet18-f37072fd.pth"] == [{"image": "pytorch", "model": "resnet18",
                                                        "weights": "imagenet:IMAGENET1K_V1"}]
    assert tree(out) == {**FILES, weightstore.MANIFEST_FILE: (out / weightstore.MANIFEST_FILE).read_bytes()}
    assert sorted(p.name for p in out.parent.iterdir()) == ["weights"]  # no temporary folder left beside it

    cluster = site["tmp"] / "cluster-cache"
    proc = import_(out, cluster)
    assert proc.returncode == 0, proc.stderr
    assert tree(cluster) == FILES
    assert "imported 3 file(s), 0 already there" in proc.stderr
    assert f"added: {TORCH}/resnet18-f37072fd.pth (0.3 MB; pytorch/resnet18)" in proc.stderr
    assert all((cluster / rel).stat().st_mode & 0o444 == 0o444 for rel in FILES)  # the container user reads them

    again = import_(out, cluster)  # idempotent: nothing added, nothing changed
    assert again.returncode == 0, again.stderr
    assert "imported 0 file(s), 3 already there" in again.stderr and tree(cluster) == FILES


def test_export_names_each_missing_file_and_writes_nothing(site):
    (site["cache"] / f"{TORCH}/squeezenet1_1-b8a52dc0.pth").unlink()
    out = site["tmp"] / "out"
    proc = export(site, out)
    assert proc.returncode == 1, proc.stderr
    missing = [line for line in proc.stderr.splitlines() if line.startswith("missing:")]
    assert len(missing) == 1 and "squeezenet1_1-b8a52dc0.pth" in missing[0], proc.stderr
    assert "zoobench weights fetch --profile carry --model pytorch/squeezenet1_1" in missing[0]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 weights file(s)")
    assert not out.exists() and sorted(p.name for p in site["tmp"].iterdir()) == sorted(
        ["manifests", "connected-cache", "pytorch.json", "keras.json", "mxnet.json"])


def test_export_refuses_a_folder_that_is_not_empty(site):
    out = site["tmp"] / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    one_line_error(export(site, out), "exists and is not an empty folder")
    assert tree(out) == {"mine.txt": b"keep me"}


@pytest.fixture
def exported(site):
    out = site["tmp"] / "export"
    proc = export(site, out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_import_refuses_a_damaged_file_in_one_line_and_leaves_the_cache_untouched(site, exported, damage):
    victim = exported / f"{TORCH}/squeezenet1_1-b8a52dc0.pth"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[1000] ^= 0xFF  # same size, other sha256
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:-1]))
    else:
        victim.unlink()
    cluster = site["tmp"] / "cluster"
    cluster.mkdir()
    (cluster / "other.bin").write_bytes(b"already here")
    needle = {"flip": "sha256", "truncate": "bytes", "delete": "missing"}[damage]
    proc = import_(exported, cluster)
    one_line_error(proc, str(victim))
    assert needle in proc.stderr and "zoobench weights export" in proc.stderr  # names the fix
    assert tree(cluster) == {"other.bin": b"already here"}  # nothing added, no temporary file left
    assert sorted(p.name for p in cluster.iterdir()) == ["other.bin"]


def test_import_never_replaces_a_different_file_already_in_the_cache(site, exported):
    cluster = site["tmp"] / "cluster"
    rel = f"{TORCH}/resnet18-f37072fd.pth"
    (cluster / rel).parent.mkdir(parents=True)
    (cluster / rel).write_bytes(b"a different resnet18")
    proc = import_(exported, cluster)
    one_line_error(proc, str(cluster / rel))
    assert "other content" in proc.stderr
    assert tree(cluster) == {rel: b"a different resnet18"}


@pytest.mark.parametrize("garbage", [
    b"not json at all",
    b'{"format": "zoobench-weights/1", "profile": "x", "created": "now", "files": [{"path": "../../etc/passwd", '
    b'"size": 1, "sha256": "' + b"0" * 64 + b'", "needed_by": []}]}',
    b'{"format": "zoobench-weights/2", "profile": "x", "created": "now", "files": []}',
    b'{"format": "zoobench-weights/1", "profile": "x", "created": "now", "files": [{"path": "a", "size": 1, '
    b'"sha256": "XYZ", "needed_by": []}]}',
])
def test_import_refuses_a_garbage_manifest_in_one_line(site, exported, garbage):
    (exported / weightstore.MANIFEST_FILE).write_bytes(garbage)
    cluster = site["tmp"] / "cluster"
    proc = import_(exported, cluster)
    one_line_error(proc, "not a zoobench weights manifest")
    assert not cluster.exists()


def test_import_of_a_folder_without_a_manifest_says_so(site):
    proc = import_(site["tmp"], site["tmp"] / "cluster")
    one_line_error(proc, weightstore.MANIFEST_FILE)
    assert not (site["tmp"] / "cluster").exists()


def disk_full_at_second_copy(monkeypatch) -> list:
    """``weightstore.copy_hashed`` copies the first file, then fails as a full disk does; the calls."""
    real, calls = weightstore.copy_hashed, []

    def full_disk(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(weightstore, "copy_hashed", full_disk)
    return calls


def test_a_failure_while_filling_undoes_what_this_import_added(site, exported, monkeypatch):
    """A disk that fills up after the first file: the files and folders this import made are removed."""
    cluster = site["tmp"] / "cluster"
    calls = disk_full_at_second_copy(monkeypatch)
    with pytest.raises(weightstore.WeightsError, match="No space left on device.*as it was"):
        weightstore.import_weights(exported, cluster)
    assert len(calls) == 2 and not cluster.exists()


# ---------------------------------------------------------------- the mirror layout

@pytest.mark.parametrize("url, expected", [
    ("https://download.pytorch.org/models/resnet18-f37072fd.pth",
     "http://mirror.lan/w/download.pytorch.org/models/resnet18-f37072fd.pth"),
    ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/x.h5",
     "http://mirror.lan/w/storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/x.h5"),
    ("https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/",
     "http://mirror.lan/w/apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"),
    ("https://Host.example:8443/a/b.bin?x=1", "http://mirror.lan/w/host.example:8443/a/b.bin?x=1"),
])
def test_mirrored_puts_the_official_host_and_path_under_the_mirror(url, expected, monkeypatch):
    assert mirror.mirrored(url, "http://mirror.lan/w/") == expected
    monkeypatch.setenv(mirror.MIRROR_ENV, "http://mirror.lan/w")
    assert mirror.mirrored(url) == expected
    monkeypatch.delenv(mirror.MIRROR_ENV)
    assert mirror.mirrored(url) == url  # no mirror: the official URL, untouched


def test_mirrored_leaves_local_paths_and_refuses_a_bad_base():
    assert mirror.mirrored("/weights/x.pth", "http://m") == "/weights/x.pth"
    for bad in ("ftp://m/w", "mirror.lan/w", "http://", "http://m/w?x=1"):
        with pytest.raises(ValueError, match="http"):
            mirror.check_mirror(bad)


def test_fetch_refuses_a_bad_mirror_in_one_line_before_any_container():
    one_line_error(zoobench("weights", "fetch", "--mirror", "ftp://mirror.lan/w", timeout=60), "--mirror")


def test_fetch_passes_the_mirror_to_every_fetch_container(tmp_path, monkeypatch):
    import contextlib
    from types import SimpleNamespace

    from orchestrator.bench import weights

    seen = []

    def predict(client, tag, args, binds, out_dir, weights_dir, log_path, **kw):
        seen.append(kw["environment"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text('{"status": "fetched"}\n')
        return SimpleNamespace(exit_code=0, reason="")

    monkeypatch.setattr(weights.containers, "predict_in_container", predict)
    monkeypatch.setattr(weights.containers, "handed_over", lambda folder: contextlib.nullcontext())
    job = SimpleNamespace(image="pytorch", model="resnet18", weights="imagenet", tag="t", run_name="pytorch-resnet18")
    weights.fetch_weights(object(), [job], tmp_path / "w", tmp_path / "logs", "host", "http://127.0.0.1:1/w")
    weights.fetch_weights(object(), [job], tmp_path / "w", tmp_path / "logs", "host")
    assert seen == [{mirror.MIRROR_ENV: "http://127.0.0.1:1/w"}, None]


def test_a_failure_while_exporting_leaves_no_folder_behind(site, monkeypatch):
    calls = disk_full_at_second_copy(monkeypatch)
    usb = site["tmp"] / "usb"
    plan = weightstore.ExportPlan(files={rel: [] for rel in FILES})
    with pytest.raises(weightstore.WeightsError, match="No space left on device.*nothing was exported"):
        weightstore.write_export(plan, site["cache"], usb / "weights", "carry")
    assert len(calls) == 2 and list(usb.iterdir()) == []
