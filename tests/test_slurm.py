"""Benches on a real single-node Slurm cluster (tests/slurm/cluster.sh: Debian slurm-wlm + munge, one
fake GPU), running real containers: same predictions as a local run, a failing task reported while the
others finish, a cancel that leaves no container and a re-run that finishes only the rest; and the
Podman runtime (a real `podman system service`) fed by `zoobench images export`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import framework_models, IN_CI, ROOT, one_line_error, require, zoobench
from orchestrator.images import store as imagestore
from test_faults import (assert_clean, background, containers_of, containers_with_role, manifests_copy,  # noqa: F401
                         published, set_model, wait_for)

pytestmark = [pytest.mark.docker, pytest.mark.slurm]
SMOKE = ["run", "--profile", "smoke", "--limit", "3", "--model", "pytorch/resnet18", "--model", "keras/mobilenetv2",
         "--model", "pytorch/squeezenet1_1", "--engine", "slurm", "--gres", "gpu:1"]


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Start (or reuse) the cluster; clients find it through SLURM_CONF."""
    require(os.geteuid() == 0 or shutil.which("sbatch") is not None, "starting the Slurm cluster needs root")
    proc = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "cluster.sh"), "up"], capture_output=True,
                          text=True, timeout=300)
    require(proc.returncode == 0, f"the Slurm test cluster did not start: {proc.stderr.strip()[-500:]}")
    conf = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    return conf


PODMAN_SOCKET = Path("/run/podman/podman.sock")


@pytest.fixture(scope="session")
def podman_host():
    """A running Podman API service (started here when none answers); its CONTAINER_HOST URL."""
    import docker

    if shutil.which("podman") is None and os.geteuid() == 0 and IN_CI:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "podman"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    require(shutil.which("podman") is not None, "podman is not installed (apt-get install podman)")
    url = f"unix://{PODMAN_SOCKET}"

    def answers() -> bool:
        try:
            docker.DockerClient(base_url=url, timeout=5).ping()
            return True
        except Exception:  # noqa: BLE001
            return False

    service = None
    if not answers():
        PODMAN_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        service = subprocess.Popen(["podman", "system", "service", "--time=0", url], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(answers, "the podman API service", timeout=60)
    yield url
    if service is not None:
        service.terminate()
        service.wait(timeout=30)


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "predictions.npz") as d:
        return {k: d[k] for k in d.files}


def test_sample_profile_on_slurm_gives_the_local_predictions(image_tags, slurm_cluster, tmp_path):
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    zoobench("run", "--profile", "sample", "--results", str(local), check=True)
    proc = zoobench("run", "--profile", "sample", "--results", str(on_slurm), "--engine", "slurm", "--gres", "gpu:1",
                    "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "submitted Slurm array" in proc.stderr
    runs = sorted(p.name for p in local.iterdir() if (p / "run.json").is_file())
    assert runs == sorted(p.name for p in on_slurm.iterdir() if (p / "run.json").is_file()) and len(runs) == 7
    for name in runs:
        a, b = predictions(local / name), predictions(on_slurm / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    ranked = json.loads(proc.stdout)
    assert len(ranked) == 7 and all(r["n"] == 6 for r in ranked)  # the runtimes' converted Lite0 too
    # Each task got the cluster's one (fake) GPU from Slurm's gres scheduling.
    outs = sorted((on_slurm / "logs").glob("slurm-*_*.out"))
    assert len(outs) == 7 and all("(GPUs: 0)" in p.read_text() for p in outs), [p.read_text() for p in outs]
    assert not (on_slurm / ".slurm" / "active.json").exists()
    assert_clean(on_slurm)
    again = zoobench("run", "--profile", "sample", "--results", str(on_slurm), "--engine", "slurm")
    assert again.returncode == 0 and again.stderr.count("reused") == 7, again.stderr
    assert "submitted Slurm array" not in again.stderr  # nothing left to submit


def test_a_failing_task_is_reported_and_the_others_finish(image_tags, slurm_cluster, tmp_path, manifests_copy):
    set_model(manifests_copy, "keras/efficientnet_lite0", timeout_s=2)
    results = tmp_path / "results"
    proc = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(results), "--engine", "slurm",
                    "--manifests", str(manifests_copy))
    assert proc.returncode == 1, proc.stderr
    assert "keras/efficientnet_lite0 failed: timed out after 2 s" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(published(results)) == ["mxnet-efficientnet_lite0", "pytorch-efficientnet_lite0"]
    assert_clean(results)


def test_cancel_mid_run_stops_the_containers_and_a_rerun_finishes_the_rest(image_tags, slurm_cluster, tmp_path):
    results = tmp_path / "results"
    args = [*SMOKE, "--results", str(results)]
    first = background(*args)
    wait_for(lambda: published(results) and containers_with_role(results, "model"),
             "one model published and the next one's container running", first, timeout=900)
    cancel = zoobench("slurm", "cancel", str(results))
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled Slurm array" in cancel.stderr
    assert containers_of(results) == []  # scancel alone would leave the running container behind
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1 and "interrupted" in err, err
    done = published(results)
    assert 1 <= len(done) < 3
    assert_clean(results)
    again = zoobench(*args)
    assert again.returncode == 0, again.stderr
    after = published(results)
    assert len(after) == 3 and all(after[name] == stamp for name, stamp in done.items())
    assert again.stderr.count("reused") == len(done)
    assert f"{3 - len(done)} task(s)" in again.stderr


def test_a_plain_scancel_stops_the_containers_too(image_tags, slurm_cluster, tmp_path):
    """scancel alone leaves a `docker run` container running; a zoobench task kills its own on SIGTERM."""
    results = tmp_path / "results"
    first = background(*SMOKE, "--results", str(results))
    wait_for(lambda: containers_with_role(results, "model"), "a model container running", first, timeout=900)
    job = json.loads((results / ".slurm" / "active.json").read_text())["job_id"]
    subprocess.run(["scancel", job], check=True)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 1 and "interrupted (the Slurm task was cancelled)" in err, err
    assert containers_of(results) == []  # nobody but the tasks removed them
    assert_clean(results)


def test_ctrl_c_of_the_submitter_cancels_the_array(image_tags, slurm_cluster, tmp_path):
    results = tmp_path / "results"
    first = background(*SMOKE, "--results", str(results))
    wait_for(lambda: containers_with_role(results, "model"), "a model container running", first, timeout=900)
    job = json.loads((results / ".slurm" / "active.json").read_text())["job_id"]
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 130 and "cancelling Slurm array" in err, err
    assert containers_of(results) == []
    states = subprocess.run(["squeue", "--states=all", "-r", "-h", "-j", job, "-o", "%T"], capture_output=True,
                            text=True).stdout.split()
    assert states and not {"RUNNING", "PENDING"} & set(states), states
    assert_clean(results)


def test_a_second_bench_is_refused_while_an_array_writes_the_folder(image_tags, slurm_cluster, tmp_path):
    results = tmp_path / "results"
    first = background(*SMOKE, "--results", str(results))
    try:
        wait_for(lambda: (results / ".slurm" / "active.json").exists(), "the array submitted", first, timeout=600)
        os.killpg(first.pid, signal.SIGKILL)  # the submitter dies; its array goes on
        first.wait()
        local = zoobench("run", "--profile", "smoke", "--limit", "3", "--model", "resnet18", "--results", str(results))
        assert local.returncode == 2 and "is being written by Slurm array" in local.stderr, local.stderr
    finally:
        if (results / ".slurm" / "active.json").exists():
            zoobench("slurm", "cancel", str(results))
    assert containers_of(results) == []


def test_no_slurm_client_on_the_host_is_one_line(image_tags, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(tmp_path / "r"), "--engine", "slurm",
                    env={"PATH": str(empty)})
    one_line_error(proc, "sbatch not found")
    assert containers_of(tmp_path / "r") == []


def test_podman_runtime_on_slurm_loads_exported_images_and_matches_docker(image_tags, slurm_cluster, podman_host,
                                                                          tmp_path):
    lite0 = ["--profile", "sample", "--model", "mxnet/efficientnet_lite0", "--no-build"]
    local = tmp_path / "docker"
    zoobench("run", *lite0, "--results", str(local), check=True)
    store = tmp_path / "images"
    zoobench("images", "export", "mxnet", "--to", str(store), check=True)
    tar = store / imagestore.tar_name(image_tags["mxnet"])
    assert tar.is_file() and tar.stat().st_size > 100e6 and not list(store.glob(".*"))
    assert "already there" in zoobench("images", "export", "mxnet", "--to", str(store), check=True).stderr
    subprocess.run(["podman", "rmi", "-f", image_tags["mxnet"]], capture_output=True)  # podman must load it
    results = tmp_path / "podman"
    proc = zoobench("run", *lite0, "--results", str(results), "--engine", "slurm", "--runtime", "podman",
                    "--images-dir", str(store), env={"CONTAINER_HOST": podman_host})
    assert proc.returncode == 0, proc.stderr
    assert f"loaded {image_tags['mxnet']}" in proc.stderr
    name = "mxnet-efficientnet_lite0"
    a, b = predictions(local / name), predictions(results / name)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    left = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=zoobench.results={results.resolve()}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []


def test_a_submit_host_without_a_container_engine(image_tags, slurm_cluster, tmp_path):
    """A login node with Slurm but no engine plans from the shared caches; the tasks run on the nodes."""
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(local), check=True)  # caches listings, ids
    proc = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(on_slurm), "--engine", "slurm",
                    "--sbatch-arg", "--export=ALL,DOCKER_HOST=unix:///var/run/docker.sock",  # the nodes have one
                    env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine-here.sock"})
    assert proc.returncode == 0, proc.stderr
    assert "note: no container engine on this host" in proc.stderr and "submitted Slurm array" in proc.stderr
    for name in ("pytorch-efficientnet_lite0", "keras-efficientnet_lite0", "mxnet-efficientnet_lite0"):
        a, b = predictions(local / name), predictions(on_slurm / name)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    again = zoobench("run", "--profile", "sample", *framework_models("sample"), "--limit", "2", "--results", str(on_slurm), "--engine", "slurm",
                     env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine-here.sock"})
    assert again.returncode == 0 and again.stderr.count("reused") == 3, again.stderr  # ids from the shared cache
