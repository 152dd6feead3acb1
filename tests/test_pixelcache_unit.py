"""The pixel cache without containers: keys, validation of cache folders, grouping, disk space,
the build/reuse flow, and `zoobench cache list|clear` on hand-made caches."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import one_line_error, zoobench
from orchestrator.bench import pixelcache
from orchestrator.bench.plan import Job, plan_jobs
from orchestrator.manifests import ModelsManifest, Profile
from orchestrator.bench.pixelcache import Group, PixelConfig, cache_key, group_jobs, problem

C224 = PixelConfig(256, 224, "bilinear")
C299 = PixelConfig(342, 299, "bicubic")
DIGEST = "sha256:" + "ab" * 32
PILLOW = "12.0.0"


def write_cache(folder: Path, config: PixelConfig = C224, n: int = 4, pillow: str = PILLOW,
                digest: str = DIGEST, index: bool = True, marker: bool = True) -> Path:
    """A cache folder as a build writes it: the orchestrator's marker, pixels.npy, then index.json
    (schema 2: a digest per chunk of rows)."""
    from zoobench_contract.pixelcache import CHUNK_ROWS, chunk_digest, pixels_digest

    folder.mkdir(parents=True, exist_ok=True)
    if marker and not (folder / pixelcache.MARKER_FILE).exists():
        pixelcache.write_marker(folder, folder.name.removesuffix(pixelcache.PARTIAL_SUFFIX), None)
    shape = (n, config.crop_size, config.crop_size, 3)
    pixels = np.lib.format.open_memmap(folder / "pixels.npy", mode="w+", dtype=np.uint8, shape=shape)
    pixels[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    pixels.flush()
    chunks = [chunk_digest(pixels[i:i + CHUNK_ROWS]) for i in range(0, n, CHUNK_ROWS)]
    del pixels
    if index:
        paths = [f"n01440764/{i}.JPEG" for i in range(n)]
        (folder / "index.json").write_text(json.dumps({
            "schema": 2, "paths": paths, "sha256": ["00" * 32] * n, "config": config.as_dict(), "pillow": pillow,
            "contract": "0.1.0", "data_digest": digest, "n_images": n, "created": "2025-01-02T03:04:05Z",
            "chunk_rows": CHUNK_ROWS, "chunk_sha256": chunks,
            "pixels_digest": pixels_digest(shape, CHUNK_ROWS, chunks)}))
    return folder


def job(model: str, config: PixelConfig | None = C224, tag: str = "t-pytorch", limit: int | None = None,
        image: str = "pytorch") -> Job:
    return Job(image, tag, model, "random", 8, 60, {}, limit, pixels=config)


# ---------------------------------------------------------------- keys

def test_key_is_stable_and_depends_on_everything_a_crop_depends_on():
    key = cache_key(C224, PILLOW, DIGEST, None)
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == cache_key(PixelConfig(256, 224, "bilinear"), PILLOW, DIGEST, None)
    others = [
        cache_key(PixelConfig(257, 224, "bilinear"), PILLOW, DIGEST, None),
        cache_key(PixelConfig(256, 223, "bilinear"), PILLOW, DIGEST, None),
        cache_key(PixelConfig(256, 224, "bicubic"), PILLOW, DIGEST, None),
        cache_key(C224, "11.3.0", DIGEST, None),
        cache_key(C224, PILLOW, "sha256:" + "cd" * 32, None),
        cache_key(C224, PILLOW, DIGEST, 3),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_effective_config_merges_the_models_own_with_the_override():
    own = {"crop_size": 299, "resize_size": 342, "interpolation": "bicubic", "mode": "tf"}
    assert PixelConfig.of(own, {}) == C299
    assert PixelConfig.of(own, {"resize_size": 320}) == PixelConfig(320, 299, "bicubic")
    assert PixelConfig.of(own, {"crop_fraction": 0.875}) == PixelConfig(341, 299, "bicubic")
    assert PixelConfig.of({}, {}) == C224  # the contract's defaults
    assert PixelConfig.of(own, {"mode": "meanstd", "mean": [0.5, 0.5, 0.5]}) == C299  # normalisation: same crop


def test_plan_gives_each_job_its_effective_config():
    served = {"a": {"preprocessing": {"crop_size": 224, "resize_size": 256, "interpolation": "bilinear"}},
              "b": {"preprocessing": {"crop_size": 224, "resize_size": 256, "interpolation": "bilinear"}}}
    manifest = ModelsManifest.model_validate({"models": {"img/b": {"preprocessing": {"resize_size": 232}}}})
    jobs = plan_jobs(Profile(models={"img": ["a", "b"]}), manifest, {"img": "t"}, lambda i: served)
    assert [j.pixels for j in jobs] == [C224, PixelConfig(232, 224, "bilinear")]


# ---------------------------------------------------------------- validating a folder

def test_a_complete_cache_is_usable(tmp_path):
    folder = write_cache(tmp_path / "k")
    assert problem(folder, C224, PILLOW, DIGEST, 4) is None


@pytest.mark.parametrize("damage, needle", [
    (lambda f: (f / "index.json").unlink(), "no index.json"),
    (lambda f: (f / "index.json").write_text("{half"), "unreadable"),
    (lambda f: (f / "pixels.npy").unlink(), "pixels.npy unreadable"),
    (lambda f: os.truncate(f / "pixels.npy", (f / "pixels.npy").stat().st_size - 1), "truncated"),
    (lambda f: os.truncate(f / "pixels.npy", 40), "pixels.npy unreadable"),
])
def test_a_damaged_cache_is_not_usable(tmp_path, damage, needle):
    folder = write_cache(tmp_path / "k")
    damage(folder)
    assert needle in (problem(folder, C224, PILLOW, DIGEST, 4) or "")


def test_a_cache_for_something_else_is_not_usable(tmp_path):
    folder = write_cache(tmp_path / "k")
    assert "data_digest" in problem(folder, C224, PILLOW, "sha256:" + "cd" * 32, 4)
    assert "pillow" in problem(folder, C224, "11.3.0", DIGEST, 4)
    assert "config" in problem(folder, PixelConfig(256, 224, "bicubic"), PILLOW, DIGEST, 4)
    assert "n_images" in problem(folder, C224, PILLOW, DIGEST, 5)
    small = write_cache(tmp_path / "small", C224, n=4)
    index = json.loads((small / "index.json").read_text())
    (small / "index.json").write_text(json.dumps({**index, "config": C299.as_dict()}))
    assert "pixels.npy is uint8(4, 224, 224, 3), expected uint8(4, 299, 299, 3)" in problem(small, C299, PILLOW,
                                                                                             DIGEST, 4)


def test_a_partial_folder_is_never_used(tmp_path):
    folder = write_cache(tmp_path / ("k" + pixelcache.PARTIAL_SUFFIX))  # complete contents, still partial
    assert problem(folder, C224, PILLOW, DIGEST, 4) == "a partial build"


# ---------------------------------------------------------------- grouping and disk space

def test_jobs_are_grouped_by_config_pillow_and_image_set():
    pillow = {"t-pytorch": PILLOW, "t-keras": PILLOW, "t-mxnet": "11.3.0"}
    jobs = [job("a"), job("b"), job("c", tag="t-keras", image="keras"), job("d", C299), job("e", C299),
            job("f", C299, limit=2), job("g", C299, limit=2), job("h", tag="t-mxnet", image="mxnet"),
            job("i", PixelConfig(232, 224, "bilinear")), job("j", None), job("k", None)]
    digests = {None: DIGEST, 2: "sha256:" + "ee" * 32}
    groups = group_jobs(jobs, pillow.__getitem__, digests, {None: 10, 2: 2})
    assert [[j.model for j in g.jobs] for g in groups] == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert [(g.config, g.pillow, g.limit, g.n_images, g.tag) for g in groups] == [
        (C224, PILLOW, None, 10, "t-pytorch"), (C299, PILLOW, None, 10, "t-pytorch"), (C299, PILLOW, 2, 2, "t-pytorch")]
    assert groups[0].key == cache_key(C224, PILLOW, DIGEST, None)
    assert groups[2].data_digest == digests[2]
    assert group_jobs([job("a")], pillow.__getitem__, digests, {None: 10}) == []  # one job gains nothing


def test_disk_space_decision():
    needed = pixelcache.expected_bytes(50_000, C224)
    assert 50_000 * 224 * 224 * 3 < needed < 50_000 * 224 * 224 * 3 * 1.01
    assert pixelcache.space_note(C224, needed, int(needed * 1.05) + 1) is None
    note = pixelcache.space_note(C224, needed, needed)
    assert note.startswith("no pixel cache for resize 256 crop 224 bilinear: needs 7.91 GB, 7.54 GB free;")
    assert note.endswith("the models decode the images themselves") and "\n" not in note


# ---------------------------------------------------------------- build and reuse flow

def group_for(n: int = 4) -> Group:
    return Group(C224, PILLOW, DIGEST, None, n, "t-pytorch", [job("a"), job("b")])


def test_build_then_reuse(tmp_path):
    root, calls, notes, said = tmp_path / "pixels", [], [], []

    def builder(group: Group, partial: Path) -> None:
        assert partial.name == group.key + ".partial" and partial.is_dir()
        calls.append(group.key)
        write_cache(partial)

    killed = root / (group_for().key + ".partial")  # left by a killed build: its marker and a half array
    killed.mkdir(parents=True)
    pixelcache.write_marker(killed, group_for().key, None)
    (killed / ".pixels.npy.tmp").write_bytes(b"\x93NUMPY half")
    folder = pixelcache.ensure(group_for(), root, builder, notes.append, said.append)
    assert folder == root / group_for().key and problem(folder, C224, PILLOW, DIGEST, 4) is None
    assert calls == [group_for().key] and notes == [] and "building" in said[0]
    assert sorted(p.name for p in root.iterdir()) == [".lock", group_for().key]
    again = pixelcache.ensure(group_for(), root, builder, notes.append, said.append)
    assert again == folder and calls == [group_for().key] and "reusing" in said[-1]


@pytest.mark.parametrize("failure, needle", [
    ("enospc", "No space left on device"),
    ("exit", "exit code 1: no space left on device writing /out/pixels.npy"),
    ("nothing", "unusable cache: incomplete: no index.json"),
    ("wrong-digest", "data_digest"),
    ("truncated", "truncated"),
])
def test_a_failed_build_is_one_note_and_leaves_nothing(tmp_path, failure, needle):
    root, notes = tmp_path / "pixels", []

    def builder(group: Group, partial: Path) -> str | None:
        if failure == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "pixels.npy"))
        if failure == "exit":
            return "exit code 1: no space left on device writing /out/pixels.npy"
        if failure != "nothing":
            write_cache(partial, digest="sha256:" + "00" * 32 if failure == "wrong-digest" else DIGEST)
            if failure == "truncated":
                os.truncate(partial / "pixels.npy", 1000)
        return None

    assert pixelcache.ensure(group_for(), root, builder, notes.append, lambda m: None) is None
    assert len(notes) == 1 and needle in notes[0] and "decode the images themselves" in notes[0]
    assert [p.name for p in root.iterdir()] == [".lock"]  # no partial, no half cache


def test_not_enough_space_builds_nothing(tmp_path, monkeypatch):
    root, notes = tmp_path / "pixels", []
    monkeypatch.setattr(pixelcache.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))  # a full disk
    built = []
    assert pixelcache.ensure(group_for(), root, lambda g, p: built.append(p), notes.append, lambda m: None) is None
    assert built == [] and len(notes) == 1 and "needs 0.00 GB, 0.00 GB free" in notes[0]


def test_an_invalid_cache_under_the_key_is_replaced(tmp_path):
    root = tmp_path / "pixels"
    stale = write_cache(root / group_for().key)
    os.truncate(stale / "pixels.npy", 500)

    def builder(group: Group, partial: Path) -> None:
        write_cache(partial)

    folder = pixelcache.ensure(group_for(), root, builder, lambda m: None, lambda m: None)
    assert folder == stale and problem(folder, C224, PILLOW, DIGEST, 4) is None


def test_data_mounted_over_the_cache_mount_point_is_detected():
    from orchestrator.bench.mounts import Bind

    assert pixelcache.mount_conflict([Bind("/data", "/data")]) is None
    assert pixelcache.mount_conflict([Bind("/pixelsets", "/pixelsets")]) is None
    assert pixelcache.mount_conflict([Bind("/pixels/val", "/pixels/val")]) == "/pixels/val"


# ---------------------------------------------------------------- zoobench cache list | clear

def test_cache_list_and_clear(tmp_path):
    root = tmp_path / "pixels"
    ka, kb, kd = (cache_key(C224, PILLOW, DIGEST, None), cache_key(C299, PILLOW, DIGEST, None),
                  cache_key(C224, PILLOW, DIGEST, 2))
    kc = "cccccccccccccccc"
    a = write_cache(root / ka, C224, n=3)
    b = write_cache(root / kb, C299, n=2)
    write_cache(root / f"{kc}.partial", index=False)
    broken = write_cache(root / kd, n=2)
    pixelcache.write_marker(broken, kd, 2)
    os.truncate(broken / "pixels.npy", 100)
    (root / ".lock").write_text("")
    listed = zoobench("cache", "list", "--json", "--cache-dir", str(root), check=True)
    rows = {r["key"]: r for r in json.loads(listed.stdout)}
    assert sorted(rows) == sorted([ka, kb, kc, kd])
    assert {k: rows[k]["state"] for k in rows} == {ka: "complete", kb: "complete", kc: "partial", kd: "broken"}
    first = rows[ka]
    assert first["config"] == "resize 256 crop 224 bilinear" and first["n_images"] == 3
    assert rows[kb]["size"] == sum(p.stat().st_size for p in b.iterdir())
    assert first["pillow"] == PILLOW and first["created"] == "2025-01-02T03:04:05Z"
    table = zoobench("cache", "list", env={pixelcache.ROOT_ENV: str(root)}, check=True)  # the env var points there too
    assert ka in table.stdout and "partial" in table.stdout and "4 cache folder(s)" in table.stdout

    one_line_error(zoobench("cache", "clear", "--cache-dir", str(root)), "--all")
    one_line_error(zoobench("cache", "clear", "eeeeeeeeeeeeeeee", "--cache-dir", str(root)), "eeeeeeeeeeeeeeee")
    assert a.is_dir()  # nothing removed by a refused clear
    cleared = zoobench("cache", "clear", ka, kc, "--cache-dir", str(root), check=True)
    assert "removed 2 cache folder(s)" in cleared.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted([".lock", kb, kd])
    dry = zoobench("cache", "clear", "--all", "--dry-run", "--cache-dir", str(root), check=True)
    assert f"would remove {kb}" in dry.stderr and "would remove 2 cache folder(s)" in dry.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted([".lock", kb, kd])
    zoobench("cache", "clear", "--all", "--cache-dir", str(root), check=True)
    assert [p.name for p in root.iterdir()] == [".lock"]


def test_clear_never_removes_what_zoobench_did_not_make(tmp_path):
    """The data-loss bug: `cache clear --all` on a folder of other things removed them."""
    root = tmp_path / "v"
    (root / "thesis").mkdir(parents=True)
    (root / "thesis" / "a").write_text("x")
    key = cache_key(C224, PILLOW, DIGEST, None)
    ours = write_cache(root / key)
    intruded = write_cache(root / cache_key(C299, PILLOW, DIGEST, None), C299)
    (intruded / "notes.txt").write_text("mine")  # a user's file inside a cache folder
    lookalike = root / "ffffffffffffffff"  # a key-like name, but not a cache
    lookalike.mkdir()
    (lookalike / "index.json").write_text(json.dumps({"config": C224.as_dict(), "pillow": PILLOW,
                                                      "data_digest": DIGEST, "n_images": 1}))
    (root / "0123456789abcdef").symlink_to(root / "thesis")
    cleared = zoobench("cache", "clear", "--all", "--cache-dir", str(root), check=True)
    assert f"removed {key}" in cleared.stderr and "4 other folder(s) left alone" in cleared.stderr
    assert "left alone" in cleared.stderr and "thesis" in cleared.stderr
    assert not ours.exists()
    assert (root / "thesis" / "a").read_text() == "x" and (intruded / "notes.txt").read_text() == "mine"
    assert (intruded / "pixels.npy").is_file() and (lookalike / "index.json").is_file()
    assert (root / "0123456789abcdef").is_symlink()
    for name in ("thesis", intruded.name, "ffffffffffffffff", "0123456789abcdef"):
        refused = zoobench("cache", "clear", name, "--cache-dir", str(root))
        one_line_error(refused, "is not a pixel cache zoobench made")
    assert (root / "thesis" / "a").is_file() and (intruded / "notes.txt").is_file()


def test_clear_pointed_at_a_results_folder_removes_nothing(tmp_path):
    results = tmp_path / "results"
    for run in ("pytorch-resnet18", "keras-resnet50"):
        (results / run).mkdir(parents=True)
        (results / run / "run.json").write_text("{}")
    cleared = zoobench("cache", "clear", "--all", "--cache-dir", str(results), check=True)
    assert "removed 0 cache folder(s)" in cleared.stderr and "2 other folder(s) left alone" in cleared.stderr
    assert sorted(p.name for p in results.iterdir()) == ["keras-resnet50", "pytorch-resnet18"]


def test_a_rebuild_leaves_a_foreign_folder_under_the_key_alone(tmp_path):
    root, notes = tmp_path / "pixels", []
    squatter = root / group_for().key
    squatter.mkdir(parents=True)
    (squatter / "mine.txt").write_text("keep")
    assert pixelcache.ensure(group_for(), root, lambda g, p: write_cache(p) and None, notes.append,
                             lambda m: None) is None
    assert (squatter / "mine.txt").read_text() == "keep" and sorted(p.name for p in root.iterdir()) == [
        ".lock", squatter.name]  # the built partial is gone, the squatter untouched
    assert len(notes) == 1 and "not a pixel cache zoobench made" in notes[0] and "decode the images" in notes[0]


def test_a_cache_of_an_earlier_release_is_recognised_by_its_own_index(tmp_path):
    key = cache_key(C224, PILLOW, DIGEST, None)
    old = write_cache(tmp_path / key, marker=False)
    assert pixelcache.not_ours(old) is None
    other = write_cache(tmp_path / "abcdefabcdefabcd", marker=False)
    assert "does not give back its key" in pixelcache.not_ours(other)


def test_a_cache_without_chunk_digests_is_not_usable(tmp_path):
    folder = write_cache(tmp_path / "k")
    index = json.loads((folder / "index.json").read_text())
    del index["chunk_sha256"]
    (folder / "index.json").write_text(json.dumps({**index, "schema": 1}))
    assert "cannot be verified" in problem(folder, C224, PILLOW, DIGEST, 4)
