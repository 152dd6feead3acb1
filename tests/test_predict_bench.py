"""``predict bench``: in-process with a fake backend (every field, percentiles, OOM at one batch size,
peak memory), then in every image (docker): every field, and each image's non-default mode recorded."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest


from zoobench_contract import benchmark, cli
from zoobench_contract.backend import ModelSpec
from zoobench_contract.preprocessing import Preprocessing

FIELDS = {"schema_version", "framework", "framework_version", "model", "weights", "precision", "precision_settings",
          "mode", "mode_settings", "device", "input", "warmup", "iterations", "results", "best", "batch1_ms", "env",
          "created"}
STEP_FIELDS = {"mean", "p50", "p90", "p99", "min", "max"}


class FakeBackend:
    """A linear classifier on uint8 pixels; out of memory at the batch sizes in ``oom_at``."""

    framework = "fake"

    def __init__(self, oom_at: tuple[int, ...] = (), device: str = "cpu") -> None:
        self.spec = ModelSpec("linear", Preprocessing(crop_size=8, resize_size=10), "seed 0")
        self.w = np.random.default_rng(0).standard_normal((8 * 8 * 3, 1000)).astype(np.float32) / 50
        self.oom_at, self.device, self.calls, self.mode = oom_at, device, [], "default"
        self.peak = 0

    def framework_version(self) -> str:
        return "1.0"

    def models(self):
        return [self.spec]

    def environment(self):
        return {"gpus": [], "modes": ["default", "fast"]}

    def resolve_device(self, requested):
        return self.device

    def modes(self):
        return ["fast"]

    def configure_mode(self, mode, device):
        self.mode = mode
        return {"fast": mode == "fast"}

    def load(self, spec, weights, device):
        return self.w

    def predict(self, model, batch):
        self.calls.append(batch.shape[0])
        if batch.shape[0] in self.oom_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.peak = max(self.peak, batch.nbytes)
        return batch.reshape(batch.shape[0], -1) @ model


class GpuBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__(device="cuda:0")

    def peak_memory(self):
        return self.peak

    def reset_peak_memory(self):
        self.peak = 0


def bench(monkeypatch, capsys, backend, *args: str) -> tuple[int, dict | None]:
    monkeypatch.setattr(benchmark, "load_backend", lambda: backend)
    try:
        cli.main(["bench", "--model", "linear", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    text = capsys.readouterr().out
    return code, (json.loads(text) if code == 0 else None)


def test_every_field_at_batch_sizes_1_and_8(monkeypatch, capsys, tmp_path):
    backend = FakeBackend()
    code, rec = bench(monkeypatch, capsys, backend, "--batch-sizes", "1,8", "--warmup", "2", "--iterations", "5",
                      "--out", str(tmp_path))
    assert code == 0
    assert FIELDS <= set(rec)
    assert json.loads((tmp_path / "bench.json").read_text()) == rec
    assert rec["input"] == {"shape": [8, 8, 3], "dtype": "uint8", "synthetic": True, "seed": 0}
    assert (rec["warmup"], rec["iterations"], rec["weights"], rec["precision"], rec["mode"]) == (2, 5, "random", "fp32",
                                                                                                 "default")
    assert rec["device"] == "cpu" and rec["env"]["framework"] == "fake" and rec["env"]["modes"] == ["default", "fast"]
    assert backend.calls == [1] * 7 + [8] * 7  # warm-up then timed steps, per batch size
    assert [r["batch_size"] for r in rec["results"]] == [1, 8]
    for r in rec["results"]:
        ms = r["step_ms"]
        assert set(ms) == STEP_FIELDS
        assert ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"]
        assert ms["min"] <= ms["mean"] <= ms["max"]
        assert r["samples_per_second"] == pytest.approx(r["batch_size"] * 1000.0 / ms["mean"], rel=1e-6)
        assert r["peak_memory"] in ("cgroup memory.peak", "process ru_maxrss") and r["peak_memory_bytes"] > 0
    best = max(rec["results"], key=lambda r: r["samples_per_second"])
    assert rec["best"] == {"batch_size": best["batch_size"], "samples_per_second": best["samples_per_second"]}
    assert rec["batch1_ms"] == rec["results"][0]["step_ms"]["p50"]


def test_out_of_memory_at_one_batch_size_is_recorded_and_the_others_go_on(monkeypatch, capsys):
    code, rec = bench(monkeypatch, capsys, FakeBackend(oom_at=(4,)), "--batch-sizes", "1,4,8", "--warmup", "1",
                      "--iterations", "2")
    assert code == 0
    assert rec["results"][1] == {"batch_size": 4, "error": "out of memory"}
    assert [r.get("samples_per_second") is not None for r in rec["results"]] == [True, False, True]
    assert rec["best"]["batch_size"] in (1, 8)


def test_out_of_memory_at_every_batch_size_exits_3(monkeypatch, capsys):
    code, _ = bench(monkeypatch, capsys, FakeBackend(oom_at=(1, 2)), "--batch-sizes", "1,2", "--iterations", "1")
    assert code == 3


def test_peak_memory_sources(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(benchmark, "CGROUP_PEAK", tmp_path / "none")
    _, rec = bench(monkeypatch, capsys, FakeBackend(), "--batch-sizes", "2", "--iterations", "1", "--warmup", "0")
    assert rec["results"][0]["peak_memory"] == "process ru_maxrss" and rec["batch1_ms"] is None
    (tmp_path / "peak").write_text("123456\n")
    monkeypatch.setattr(benchmark, "CGROUP_PEAK", tmp_path / "peak")
    _, rec = bench(monkeypatch, capsys, FakeBackend(), "--batch-sizes", "2", "--iterations", "1")
    assert rec["results"][0]["peak_memory"] == "cgroup memory.peak"
    assert rec["results"][0]["peak_memory_bytes"] == 123456
    _, rec = bench(monkeypatch, capsys, GpuBackend(), "--batch-sizes", "1,4", "--iterations", "1")
    assert [r["peak_memory"] for r in rec["results"]] == ["cuda_max_memory_allocated"] * 2
    assert [r["peak_memory_bytes"] for r in rec["results"]] == [4 * 192, 4 * 4 * 192]  # float32; reset per batch size


def test_mode_is_applied_and_recorded(monkeypatch, capsys):
    backend = FakeBackend()
    _, rec = bench(monkeypatch, capsys, backend, "--batch-sizes", "1", "--iterations", "1", "--mode", "fast")
    assert (rec["mode"], rec["mode_settings"], backend.mode) == ("fast", {"fast": True}, "fast")


@pytest.mark.parametrize("args", [["--batch-sizes", "0"], ["--batch-sizes", "1,1"], ["--batch-sizes", "a"],
                                  ["--precision", "fp8"], ["--device", "tpu"], ["--mode", "warp"],
                                  ["--weights", "x.pt"]])
def test_bad_options_are_one_line_exit_2(monkeypatch, capsys, args):
    code, _ = bench(monkeypatch, capsys, FakeBackend(), *args)
    assert code == 2


# ------------------------------------------------------------------ docker: every image

SMALL = {"pytorch": "resnet18", "keras": "mobilenetv2", "mxnet": "resnet18_v1", "keras-jax": "mobilenetv2",
         "keras-torch": "mobilenetv2", "onnxruntime": "pytorch.resnet18", "openvino": "pytorch.resnet18"}
# Each image's mode beside the default; Keras on JAX (always jax.jit) and on PyTorch (eager) offer none.
OTHER_MODE = {"pytorch": "channels-last", "keras": "jit", "mxnet": "imperative", "onnxruntime": "opt-basic",
              "openvino": "throughput"}


def images() -> list[str]:
    from orchestrator.images.manifest import load_manifest

    return sorted(load_manifest(Path(__file__).resolve().parents[1] / "manifests" / "images.yaml"))


@pytest.fixture
def mounted(image_tags, converted_cache):
    """The runtime images see the tests' conversions (test_contract_suite.MOUNTS) during one test."""
    from test_contract_suite import MOUNTS, mount_conversions

    mount_conversions(image_tags, converted_cache)
    yield
    MOUNTS.clear()


def docker_bench(tag: str, model: str, *args: str) -> dict:
    """`predict bench` in the image (a runtime image with the tests' conversions mounted: test_contract_suite)."""
    from test_contract_suite import docker_run

    proc = docker_run(tag, "bench", "--model", model, "--weights", "random", "--batch-sizes", "1,8", "--iterations",
                      "3", "--warmup", "1", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.docker
@pytest.mark.parametrize("image", images())
def test_bench_in_every_image_has_every_field(image_tags, mounted, image):
    from test_contract_suite import FRAMEWORK

    rec = docker_bench(image_tags[image], SMALL[image])
    assert FIELDS <= set(rec)
    assert rec["framework"] == FRAMEWORK[image] and rec["model"] == SMALL[image] and rec["mode"] == "default"
    assert [r["batch_size"] for r in rec["results"]] == [1, 8]
    for r in rec["results"]:
        assert r["samples_per_second"] > 0 and set(r["step_ms"]) == STEP_FIELDS
        assert r["step_ms"]["min"] <= r["step_ms"]["p50"] <= r["step_ms"]["p99"] <= r["step_ms"]["max"]
        assert r["peak_memory"] in ("cgroup memory.peak", "process ru_maxrss") and r["peak_memory_bytes"] > 0
    assert rec["batch1_ms"] == rec["results"][0]["step_ms"]["p50"]
    assert (OTHER_MODE[image] in rec["env"]["modes"]) if image in OTHER_MODE else rec["env"]["modes"] == ["default"]


@pytest.mark.docker
@pytest.mark.parametrize("image", sorted(OTHER_MODE))
def test_each_images_other_mode_runs_and_is_recorded(image_tags, mounted, image):
    rec = docker_bench(image_tags[image], SMALL[image], "--mode", OTHER_MODE[image])
    assert rec["mode"] == OTHER_MODE[image] and rec["mode_settings"]
    assert all(r["samples_per_second"] > 0 for r in rec["results"])


@pytest.mark.docker
def test_pytorch_compile_is_refused_in_one_line_without_a_compiler(image_tags):
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", image_tags["pytorch"], "bench", "--model",
                           "resnet18", "--mode", "compile", "--iterations", "1", "--batch-sizes", "1"],
                          capture_output=True, text=True, timeout=600)
    info = json.loads(subprocess.run(["docker", "run", "--rm", image_tags["pytorch"], "info"], capture_output=True,
                                     text=True, timeout=600).stdout)
    if "compile" not in info.get("modes_unavailable", {}):
        assert proc.returncode == 0, proc.stderr[-2000:]  # the image has a compiler: compile runs
        return
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "compiler" in errors[0]
