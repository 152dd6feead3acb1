"""The orchestrator end to end: real containers, ranking, resume after a kill, one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import FRAMEWORK_IMAGES, framework_models, ROOT, one_line_error, zoobench

pytestmark = pytest.mark.docker


SAMPLE_RUNS = {"pytorch-efficientnet_lite0", "keras-efficientnet_lite0", "mxnet-efficientnet_lite0",
               "keras-jax-efficientnet_lite0", "keras-torch-efficientnet_lite0",
               "onnxruntime-pytorch.efficientnet_lite0", "openvino-pytorch.efficientnet_lite0"}


def test_sample_bench_ranks_lite0_in_every_image(image_tags, tmp_path):
    """`make bench` on a fresh machine: the runtimes' conversion is made first (a cache of its own here), then
    Lite0 with its real weights in all seven images, ranked, reported (with the fidelity of the conversions)."""
    results, converted = tmp_path / "results", tmp_path / "converted"
    env = {"ZOOBENCH_CONVERTED_CACHE": str(converted)}
    proc = zoobench("run", "--profile", "sample", "--results", str(results), "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "pytorch efficientnet_lite0 (imagenet) -> onnx: converted" in proc.stderr, proc.stderr
    rows = json.loads(proc.stdout)
    lite = {r["run"]: r for r in rows}
    assert set(lite) == SAMPLE_RUNS
    for r in lite.values():
        assert r["n"] == 6 and r["acc1"] >= 4 / 6 and r["acc5"] == 1.0 and r["weights"] == "imagenet"
    assert len({r["acc1"] for r in lite.values()}) == 1
    assert lite["onnxruntime-pytorch.efficientnet_lite0"]["platform"].endswith("(pytorch efficientnet_lite0)")
    assert lite["keras-jax-efficientnet_lite0"]["platform"].startswith("keras 3.15.1 (jax ")
    assert lite["keras-torch-efficientnet_lite0"]["platform"].startswith("keras 3.15.1 (torch ")
    request = json.loads((results / "openvino-pytorch.efficientnet_lite0" / "request.json").read_text())["request"]
    assert request["conversion"]["source_image_id"] == json.loads(
        (results / "pytorch-efficientnet_lite0" / "run.json").read_text())["env"]["image_id"]
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*/run.json")}
    assert len(stamps) == 7
    page = (results / "report.html").read_text()  # the bench writes its report, the plot inline
    assert f"report: {results / 'report.html'}" in proc.stderr
    assert all(run in page for run in lite) and "data:image/png;base64," in page
    assert 'id="fidelity-table"' in page and page.count("(pytorch efficientnet_lite0)") >= 2
    assert (results / "results.md").is_file() and (results / "acc_vs_speed.png").is_file()
    # Real runs of one architecture in seven images: the agreement matrix and a pairwise compare.
    matrix = json.loads(zoobench("compare", str(results), "--matrix", "--format", "json", check=True).stdout)
    lite0 = next(m for m in matrix if m["architecture"] == "efficientnet_lite0")
    assert sorted(lite0["runs"]) == sorted(SAMPLE_RUNS)
    assert all(n == 6 for row in lite0["n_shared"] for n in row)
    pair = json.loads(zoobench("compare", str(results / "pytorch-efficientnet_lite0"), str(results / "keras-efficientnet_lite0"),
                               "--format", "json", check=True).stdout)
    right = round(lite["pytorch-efficientnet_lite0"]["acc1"] * 6)
    assert pair["n_shared"] == 6 and pair["both_right"] + pair["only_a"] == right and "fidelity" not in pair
    fid = json.loads(zoobench("compare", str(results / "pytorch-efficientnet_lite0"),
                              str(results / "onnxruntime-pytorch.efficientnet_lite0"), "--format", "json",
                              check=True).stdout)["fidelity"]
    assert fid["top1_agreement"] == 1.0 and fid["acc1_diff_points"] == 0.0 and fid["within_mlperf_99"]
    assert 0 <= fid["max_abs_logit_diff"] < 1e-3 and fid["exporter"].startswith("torch.onnx.export")
    again = zoobench("run", "--profile", "sample", "--results", str(results), env=env)
    assert again.returncode == 0 and again.stderr.count("reused") == 7, again.stderr
    assert "cached (the record matches)" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in results.glob("*/run.json")} == stamps


def published(results: Path) -> dict[str, int]:
    """Finished runs (a ``.partial`` folder is work in progress) -> run.json mtime."""
    return {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/run.json")
            if not p.parent.name.endswith(".partial")}


def test_killed_bench_resumes_only_unfinished_models(image_tags, tmp_path):
    results = tmp_path / "results"
    args = ["run", "--profile", "smoke", "--results", str(results), "--limit", "3",
            "--model", "pytorch/resnet18", "--model", "keras/mobilenetv2", "--model", "pytorch/squeezenet1_1"]
    exe = Path(sys.executable).with_name("zoobench")
    first = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 900
    while not published(results):
        assert first.poll() is None, "bench ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # no clean-up at all: worst case
    first.wait()
    done = published(results)
    assert 1 <= len(done) < 3
    second = zoobench("run", *args[1:])
    assert second.returncode == 0, second.stderr
    after = published(results)
    assert len(after) == 3 and not list(results.glob("*.partial"))
    for name, stamp in done.items():
        assert after[name] == stamp, f"{name} was re-run"
    assert second.stderr.count("reused") == len(done)


@pytest.fixture
def manifests_copy(tmp_path) -> Path:
    target = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", target)
    return target


def test_bad_manifest(manifests_copy, image_tags):
    path = manifests_copy / "profiles.yaml"
    path.write_text(path.read_text().replace("data: sample", "data: smaple", 1))
    proc = zoobench("run", "--manifests", str(manifests_copy))
    one_line_error(proc, "profiles.yaml")
    assert "data" in proc.stderr
    path.write_text("profiles: [unclosed")
    one_line_error(zoobench("run", "--manifests", str(manifests_copy)), "invalid YAML")


def test_unknown_profile_and_model(manifests_copy, image_tags):
    one_line_error(zoobench("run", "--profile", "nope"), "unknown profile 'nope'")
    path = manifests_copy / "profiles.yaml"
    path.write_text(path.read_text().replace("pytorch: [efficientnet_lite0]", "pytorch: [efficientnet_lite9]", 1))
    one_line_error(zoobench("run", "--manifests", str(manifests_copy)), "efficientnet_lite9")


def test_bad_data(tmp_path, image_tags):
    one_line_error(zoobench("run", "--data", str(tmp_path / "missing")), "does not exist")
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    one_line_error(zoobench("run", "--data", str(tmp_path / "empty")), "no images found")
    one_line_error(zoobench("run", "--profile", "seed"), "--data")


def test_image_never_built(image_tags, tmp_path, manifests_copy):
    """A variant no one has built (CI builds cpu and cuda: this one gets its own build arg, so its tag is new)."""
    path = manifests_copy / "images.yaml"
    doc = yaml.safe_load(path.read_text())
    for image in doc["images"].values():
        image["variants"]["never"] = {**image["variants"]["cpu"], "build_args": {"NEVER_BUILT": "1"}}
    path.write_text(yaml.safe_dump(doc))
    proc = zoobench("run", "--variant", "never", "--no-build", "--manifests", str(manifests_copy),
                    "--results", str(tmp_path / "r"))
    one_line_error(proc, "not built")


def test_stopped_engine(tmp_path):
    proc = zoobench("run", "--results", str(tmp_path / "r"), env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    one_line_error(proc, "cannot reach the Docker engine")
    doctor = zoobench("doctor", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert doctor.returncode == 1 and "docker engine" in doctor.stdout


def test_containers_are_locked_down(image_tags, tmp_path, manifests_copy):
    """docker inspect of a live model container: CIS 5.x settings; the bench still works under them."""
    models = manifests_copy / "models.yaml"
    models.write_text(models.read_text().replace("  memory: null", "  memory: 3g"))
    results = tmp_path / "results"
    exe = Path(sys.executable).with_name("zoobench")
    bench = subprocess.Popen([str(exe), "run", "--profile", "sample", *framework_models("sample"), "--results",
                              str(results), "--manifests", str(manifests_copy)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    label = f"label=zoobench.results={results.resolve()}"
    deadline = time.monotonic() + 600
    while not (ids := subprocess.run(["docker", "ps", "-q", "--filter", label, "--filter", "label=zoobench.role=model"],
                                     capture_output=True, text=True).stdout.split()):
        assert bench.poll() is None, bench.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    found = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True)
    out, err = bench.communicate(timeout=900)
    assert bench.returncode == 0, err  # both runners work inside the locked-down container
    if found.returncode != 0:
        pytest.fail(f"the container ended before it could be inspected: {found.stderr}")
    info = json.loads(found.stdout)[0]
    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["PidsLimit"] == 4096 and host["Memory"] == 3 * 1024 ** 3
    assert host["NetworkMode"] == "none" and host["Privileged"] is False
    assert info["Config"]["User"] not in ("", "0", "root", "0:0")
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/weights"]["RW"] is False and mounts["/out"]["RW"] is True
    data = [m for d, m in mounts.items() if d not in ("/weights", "/out")]
    assert data and all(m["RW"] is False for m in data)
    owners = {p.stat().st_uid for p in results.rglob("*")}
    assert owners == {os.getuid()}, owners  # files belong to the user who ran zoobench


def test_weights_fetch_reports_what_it_did(image_tags, tmp_path):
    smoke = zoobench("weights", "fetch", "--profile", "smoke")
    assert smoke.returncode == 0 and "need nothing (random weights): 15" in smoke.stderr, smoke.stderr
    sample = zoobench("weights", "fetch", "--profile", "sample")
    assert sample.returncode == 0 and "bundled in the image: 5" in sample.stderr, sample.stderr
    network = f"zoobench-test-offline-{os.getpid()}"  # internal: no route out, whatever the host can reach
    subprocess.run(["docker", "network", "rm", network], capture_output=True)
    subprocess.run(["docker", "network", "create", "--internal", network], check=True, capture_output=True)
    try:
        offline = zoobench("weights", "fetch", "--profile", "full", "--model", "pytorch/resnet18",
                           "--model", "pytorch/alexnet", "--network", network, timeout=900)
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
    assert offline.returncode == 1, offline.stderr
    listed = next(line for line in offline.stderr.splitlines() if line.startswith("could not fetch 2: "))
    assert "pytorch/resnet18" in listed and "pytorch/alexnet" in listed, offline.stderr
    assert "error: weights of 2 of 2 model(s) could not be fetched" in offline.stderr
    assert "Traceback" not in offline.stderr


def test_pixel_cache_predictions_are_byte_identical_and_the_cache_is_reused(image_tags, docker_client, tmp_path):
    """smoke twice, with the pixel cache and without: the same bytes; the expected caches, then reused."""
    from collections import defaultdict

    from orchestrator.bench.plan import plan_jobs
    from orchestrator.bench.imagefacts import pillow_version, served_models
    from orchestrator.manifests import get_profile, load_models
    from orchestrator.bench.pixelcache import cache_key

    pixels = tmp_path / "pixels"
    env = {"ZOOBENCH_PIXEL_CACHE": str(pixels)}
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    base = ["run", "--profile", "smoke", "--limit", "3"]
    smoke = [*base, *framework_models("smoke")]
    first = zoobench(*smoke, "--results", str(cached), env=env)
    assert first.returncode == 0, first.stderr
    second = zoobench(*smoke, "--results", str(plain), "--no-pixel-cache", env=env)
    assert second.returncode == 0, second.stderr
    assert "pixel cache" not in second.stderr
    runs = sorted(p.parent.name for p in cached.glob("*/predictions.npz"))
    assert len(runs) == 9 and runs == sorted(p.parent.name for p in plain.glob("*/predictions.npz"))
    for name in runs:
        assert (cached / name / "predictions.npz").read_bytes() == (plain / name / "predictions.npz").read_bytes(), name

    # The caches expected: one per (pixel config, Pillow version) that two or more models share.
    prof = get_profile("smoke")
    prof = prof.model_copy(update={"models": {i: m for i, m in prof.models.items() if i in FRAMEWORK_IMAGES}})
    jobs = plan_jobs(prof, load_models(), image_tags, lambda i: served_models(docker_client, image_tags[i]), limit=3)
    digest = json.loads((plain / runs[0] / "run.json").read_text())["data"]["digest"]
    groups: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        groups[cache_key(job.pixels, pillow_version(docker_client, job.tag), digest, 3)].append(job.run_name)
    expected = {key: names for key, names in groups.items() if len(names) >= 2}
    assert expected, "the smoke profile must have models sharing a pixel configuration"
    assert sorted(p.name for p in pixels.iterdir() if not p.name.startswith(".")) == sorted(expected)
    assert first.stderr.count(": building ") == len(expected), first.stderr
    used = {name: json.loads((cached / name / "request.json").read_text())["pixel_cache"] for name in runs}
    assert used == {name: next((k for k, names in expected.items() if name in names), None) for name in runs}
    assert {json.loads((plain / name / "request.json").read_text())["pixel_cache"] for name in runs} == {None}

    # Resume does not care about the cache: the cached bench's runs are reused without it.
    again = zoobench(*smoke, "--results", str(cached), "--no-pixel-cache", env=env)
    assert again.returncode == 0 and again.stderr.count("reused") == 9, again.stderr
    # A new bench on the same data reuses the cache: no build.
    key, names = next(iter(expected.items()))
    pick = [arg for name in names[:2] for arg in ("--model", name.replace("-", "/", 1))]
    third = zoobench(*base, "--results", str(tmp_path / "third"), *pick, env=env)
    assert third.returncode == 0, third.stderr
    assert ": building " not in third.stderr and f"reusing {key}" in third.stderr, third.stderr
    for name in names[:2]:
        assert json.loads((tmp_path / "third" / name / "request.json").read_text())["pixel_cache"] == key
        assert (tmp_path / "third" / name / "predictions.npz").read_bytes() == \
            (plain / name / "predictions.npz").read_bytes()
    assert not list(pixels.glob("*.partial")) and not list(cached.glob("*.partial"))
