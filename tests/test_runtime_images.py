"""The deployment-runtime images (manifests/images.yaml `reads: onnx`: onnxruntime, openvino) in real
containers: EfficientNet-Lite0 converted from the pytorch image with `zoobench convert` (the cache at
.cache/converted/onnx/pytorch/<hash>/, mounted read-only at /converted/pytorch) is listed as
pytorch.efficientnet_lite0 and agrees with the pytorch image on the sample photos; run.json records
the conversion and the probe; a changed file, a weights choice never converted, a weights file and a
precision the runtime cannot serve are each refused in one line; facts and bench work."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_contract_suite import docker_run
from conftest import ROOT, converted_mount, one_line_error
from orchestrator.convert.records import Conversion
from orchestrator.images import manifest as image_manifest
from zoobench_contract.outputs import read_predictions

pytestmark = pytest.mark.docker
SPECS = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
RUNTIMES = sorted(name for name, spec in SPECS.items() if spec.reads == "onnx")
SOURCE, MODEL = "pytorch", "efficientnet_lite0"
NAME = f"{SOURCE}.{MODEL}"
PROBE_MAX = 1e-4  # max |logit difference| on the probe batch at fp32 (measured: 4e-6 ORT, 8e-6 OpenVINO)
MODES = {"onnxruntime": ["opt-disabled", "opt-basic", "opt-extended"], "openvino": ["throughput"]}


def runtime(tag: str, *args: str, converted: Path | None = None, data: Path | None = None, out: Path | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """The contract suite's docker_run, with ``converted`` (a source's conversions) at /converted/SOURCE."""
    extra = ("-v", f"{converted}:/converted/{SOURCE}:ro") if converted is not None else ()
    return docker_run(tag, *args, data=data, out=out, timeout=timeout, extra=extra)


def run_lite0(tag: str, converted: Path, data: Path, out: Path, *extra: str) -> tuple[dict, dict]:
    proc = runtime(tag, "run", "--model", NAME, "--data", "/data", "--out", "/out", *extra,
                   converted=converted, data=data, out=out)
    assert proc.returncode == 0, proc.stderr
    return read_predictions(out / "predictions.npz"), json.loads((out / "run.json").read_text())


@pytest.fixture(scope="module")
def converted(converted_cache, image_tags) -> Path:
    """Lite0 (imagenet and random weights) exported by the pytorch image with the real `zoobench convert`
    (conftest's cache of the tests' own): the folder a runtime container sees at /converted/pytorch."""
    folder, target = converted_mount(converted_cache, image_tags)
    assert target == f"/converted/{SOURCE}" and folder == Conversion(SOURCE, image_tags[SOURCE], MODEL, "imagenet").source_folder(converted_cache)
    for weights in ("imagenet", "random"):
        assert (folder / MODEL / weights / "convert.json").is_file(), f"zoobench convert left no {weights} record in {folder}"
    return folder


@pytest.fixture(scope="module")
def reference(image_tags, sample_dir, tmp_path_factory) -> dict:
    """The source image's own predictions for the sample photos."""
    out = tmp_path_factory.mktemp("pytorch")
    out.chmod(0o777)
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{sample_dir}:/data:ro",
                           "-v", f"{out}:/out", image_tags[SOURCE], "run", "--model", MODEL, "--data", "/data",
                           "--out", "/out"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return read_predictions(out / "predictions.npz")


@pytest.fixture(scope="module")
def fp32_runs(image_tags, converted, sample_dir, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    return {rt: run_lite0(image_tags[rt], converted, sample_dir, tmp_path_factory.mktemp(rt)) for rt in RUNTIMES}


def test_the_runtimes_are_in_the_manifest():
    assert RUNTIMES == ["onnxruntime", "openvino"]
    assert "cuda" not in SPECS["openvino"].variants and SPECS["onnxruntime"].variants["cuda"].gpu.cuda == "13.0"


@pytest.mark.parametrize("rt", RUNTIMES)
def test_list_and_info(image_tags, converted, rt):
    empty = runtime(image_tags[rt], "list")
    assert empty.returncode == 0 and json.loads(empty.stdout) == [], empty.stderr
    listing = runtime(image_tags[rt], "list", converted=converted)
    assert listing.returncode == 0, listing.stderr
    (entry,) = [m for m in json.loads(listing.stdout) if m["name"] == NAME]
    record = json.loads((converted / MODEL / "imagenet" / "convert.json").read_text())
    assert entry["framework"] == rt and entry["weights_bundled"] and entry["num_classes"] == 1000
    assert entry["preprocessing"] == record["preprocessing"]
    assert entry["converted"]["source"] == SOURCE and {"imagenet", "random"} <= set(entry["converted"]["weights"])
    info = runtime(image_tags[rt], "info", converted=converted)
    assert info.returncode == 0, info.stderr
    env = json.loads(info.stdout)
    assert env["framework"] == rt and env["reads"] == "onnx" and env["image_tag"] == image_tags[rt]
    assert env["gpu_build"]["cuda"] is None and env["gpus"] == []


@pytest.mark.parametrize("rt", RUNTIMES)
def test_lite0_agrees_with_the_source_image(fp32_runs, reference, converted, rt):
    pred, run = fp32_runs[rt]
    assert list(pred["paths"]) == list(reference["paths"])
    np.testing.assert_array_equal(pred["topk_indices"], reference["topk_indices"])
    np.testing.assert_allclose(pred["topk_scores"], reference["topk_scores"], atol=1e-3)
    record_bytes = (converted / MODEL / "imagenet" / "convert.json").read_bytes()
    record = json.loads(record_bytes)
    conv = run["converted"]
    assert conv["record_sha256"] == hashlib.sha256(record_bytes).hexdigest()
    assert conv["source"]["framework"] == SOURCE and "env" not in conv["source"]
    assert conv["exporter"] == record["exporter"] and conv["format"] == "onnx"
    assert conv["probe"]["batch"] == 2 and conv["probe"]["max_abs_logit_diff"] < PROBE_MAX
    assert run["weights"]["sha256"] == record["files"]["model.onnx"]
    assert run["parameters"]["unchanged"] is True and run["parameters"]["arrays"] > 100
    assert run["model_facts"]["params"]["total"] == record["model_facts"]["params"]["total"]
    assert run["precision"] == "fp32" and run["determinism"]["expected_bitwise"]


def test_the_recorded_settings(fp32_runs):
    ort, ov = fp32_runs["onnxruntime"][1], fp32_runs["openvino"][1]
    assert ort["precision_settings"]["providers"] == ["CPUExecutionProvider"]
    threads = ort["precision_settings"]["intra_op_num_threads"]  # the container's CPUs (affinity, cgroup quota)
    assert 1 <= threads <= ort["env"]["cpu_count"] and threads == ort["env"]["intra_op_num_threads"]
    assert ort["mode_settings"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert ov["precision_settings"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert ov["mode_settings"]["PERFORMANCE_HINT"] == "LATENCY" and ov["mode_settings"]["NUM_STREAMS"] >= 1


@pytest.mark.parametrize("rt,mode", [(rt, m) for rt in RUNTIMES for m in MODES[rt]])
def test_modes_give_the_same_predictions(image_tags, converted, sample_dir, fp32_runs, tmp_path, rt, mode):
    pred, run = run_lite0(image_tags[rt], converted, sample_dir, tmp_path, "--mode", mode)
    base = fp32_runs[rt][0]
    np.testing.assert_array_equal(pred["topk_indices"][:, 0], base["topk_indices"][:, 0])
    np.testing.assert_allclose(pred["topk_scores"], base["topk_scores"], atol=1e-4)
    assert run["mode"] == mode and run["converted"]["probe"]["max_abs_logit_diff"] < PROBE_MAX
    if rt == "openvino":
        assert run["mode_settings"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    else:
        assert run["mode_settings"]["graph_optimization_level"] == {"opt-disabled": "ORT_DISABLE_ALL",
                                                                    "opt-basic": "ORT_ENABLE_BASIC",
                                                                    "opt-extended": "ORT_ENABLE_EXTENDED"}[mode]


def test_openvino_bf16_keeps_the_top1(image_tags, converted, sample_dir, reference, tmp_path):
    caps = json.loads(runtime(image_tags["openvino"], "info").stdout)["optimization_capabilities"]
    if "BF16" not in caps:
        proc = runtime(image_tags["openvino"], "run", "--model", NAME, "--data", "/data", "--out", "/out",
                       "--precision", "bf16", converted=converted, data=sample_dir, out=tmp_path)
        one_line_error(proc, "this CPU has no bfloat16 support")
        return
    pred, run = run_lite0(image_tags["openvino"], converted, sample_dir, tmp_path, "--precision", "bf16")
    np.testing.assert_array_equal(pred["topk_indices"][:, 0], reference["topk_indices"][:, 0])
    assert run["precision_settings"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert 0 < run["converted"]["probe"]["max_abs_logit_diff"] < 0.5  # measured 8e-2 (bf16 mantissa)


def test_openvino_refuses_bf16_on_a_cpu_without_it(image_tags):
    script = ("from zoobench_openvino.backend import Backend\n"
              "from zoobench_contract.backend import UsageError\n"
              "b = Backend(); b.capabilities = lambda: ['FP32', 'INT8']\n"
              "try:\n    b.configure('bf16', 'cpu')\nexcept UsageError as e:\n    print(e)\n")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
                           image_tags["openvino"], "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("--precision bf16: this CPU has no bfloat16 support"), proc.stdout


@pytest.mark.parametrize("rt,precision,needle", [("onnxruntime", "tf32", "fp32 only"), ("onnxruntime", "bf16", "fp32 only"),
                                                  ("openvino", "tf32", "fp32 or bf16")])
def test_precisions_the_runtime_cannot_serve_are_one_line(image_tags, converted, sample_dir, tmp_path, rt, precision, needle):
    proc = runtime(image_tags[rt], "run", "--model", NAME, "--data", "/data", "--out", "/out", "--precision", precision,
                   converted=converted, data=sample_dir, out=tmp_path)
    one_line_error(proc, needle)
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_changed_model_file_is_exit_2(image_tags, converted, sample_dir, tmp_path, rt):
    copy = tmp_path / "converted"
    shutil.copytree(converted, copy)
    model = copy / MODEL / "imagenet" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    proc = runtime(image_tags[rt], "run", "--model", NAME, "--data", "/data", "--out", "/out",
                   converted=copy, data=sample_dir, out=tmp_path / "out")
    one_line_error(proc, f"/converted/{SOURCE}/{MODEL}/imagenet/model.onnx: sha256 ")
    assert "does not match convert.json" in proc.stderr and "zoobench convert" in proc.stderr
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("rt", RUNTIMES)
def test_weights_never_converted_or_a_file_are_refused(image_tags, converted, sample_dir, tmp_path, rt):
    proc = runtime(image_tags[rt], "run", "--model", NAME, "--data", "/data", "--out", "/out",
                   "--weights", "imagenet:V9", converted=converted, data=sample_dir, out=tmp_path)
    one_line_error(proc, f"zoobench convert --from {SOURCE} --to onnx --model {MODEL} --weights imagenet:V9", code=4)
    some_file = next(p for p in sorted(sample_dir.rglob("*")) if p.is_file())
    proc = runtime(image_tags[rt], "run", "--model", NAME, "--data", "/data", "--out", "/out",
                   "--weights", f"/data/{some_file.relative_to(sample_dir)}", converted=converted, data=sample_dir,
                   out=tmp_path)
    one_line_error(proc, "serves converted models only")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_facts_and_bench(image_tags, converted, rt):
    record = json.loads((converted / MODEL / "imagenet" / "convert.json").read_text())
    facts = runtime(image_tags[rt], "facts", "--model", NAME, converted=converted)
    assert facts.returncode == 0, facts.stderr
    line = json.loads(facts.stdout)
    assert line["params"]["total"] == record["model_facts"]["params"]["total"]
    assert line["macs"]["value"] == record["model_facts"]["macs"]["value"]
    assert f"counted by {SOURCE} before the ONNX conversion" in line["params"]["counter"]
    bench = runtime(image_tags[rt], "bench", "--model", NAME, "--batch-sizes", "1,8", "--iterations", "3",
                    "--warmup", "1", converted=converted)
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert [r["batch_size"] for r in result["results"]] == [1, 8]
    assert all(r["samples_per_second"] > 0 for r in result["results"])
