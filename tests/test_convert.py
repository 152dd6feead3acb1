"""`zoobench convert` end to end, real containers: PyTorch's Lite0 exported to ONNX in its own image into a
conversions cache of each test's own (ZOOBENCH_CONVERTED_CACHE), the record checked against the image and the
files, a cached conversion reused, a changed file refused (one line) until --force, a bad request one line; and
the runtime images (onnxruntime) benching and timing what was converted, with the conversion's resume key."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import one_line_error, zoobench
from orchestrator.convert.records import resume_key
from orchestrator.paths import WEIGHTS_CACHE
from zoobench_contract.backend import WEIGHTS_MOUNT
from zoobench_contract.dataset import file_sha256

pytestmark = pytest.mark.docker

CONVERT = ("convert", "--from", "pytorch", "--to", "onnx", "--no-build")
LITE0 = "efficientnet_lite0"
RUNTIME_MODEL = "onnxruntime/pytorch.efficientnet_lite0"
RUNTIME_RUN = "onnxruntime-pytorch.efficientnet_lite0"


def cache_env(root: Path) -> dict[str, str]:
    return {"ZOOBENCH_CONVERTED_CACHE": str(root)}


def folder_of(root: Path, tags: dict[str, str], model: str = LITE0, weights: str = "imagenet") -> Path:
    return root / "onnx" / "pytorch" / tags["pytorch"].rsplit(":", 1)[-1] / model / weights


def record_of(folder: Path) -> dict:
    return json.loads((folder / "convert.json").read_text())


def image_id(tag: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True,
                          text=True, check=True).stdout.strip()


def listed_preprocessing(tag: str, model: str) -> dict:
    """The image's own `predict list` preprocessing of ``model``."""
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "list"], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    return next(m for m in json.loads(out) if m["name"] == model)["preprocessing"]


def weights_file_sha256(tag: str, path: str) -> str:
    """The sha256 of a weights file a record names: in the weights cache, or bundled in the image."""
    if Path(path).is_relative_to(WEIGHTS_MOUNT):
        return file_sha256(WEIGHTS_CACHE / Path(path).relative_to(WEIGHTS_MOUNT))
    return subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sha256sum", tag, path],
                          capture_output=True, text=True, check=True, timeout=300).stdout.split()[0]


def flip_byte(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_convert_writes_a_checked_record_reuses_it_and_refuses_a_changed_file(image_tags, tmp_path):
    root = tmp_path / "converted"
    proc = zoobench(*CONVERT, "--model", LITE0, env=cache_env(root), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    done = lines_with(proc.stdout + proc.stderr, "converted in")
    assert len(done) == 1 and done[0].startswith(f"pytorch {LITE0} (imagenet) -> onnx: converted in"), proc.stdout
    folder = folder_of(root, image_tags)
    assert {"model.onnx", "probe.npz", "export.json", "convert.json"} <= {p.name for p in folder.iterdir()}
    rec = record_of(folder)
    assert rec["schema"] == 1 and rec["format"] == "onnx" and "zoobench" in rec
    src = rec["source"]
    assert src["image"] == "pytorch" and src["model"] == LITE0 and src["framework"] == "pytorch"
    assert src["image_id"] == image_id(image_tags["pytorch"]) and src["image_tag"] == image_tags["pytorch"]
    weights = rec["weights"]
    assert weights["kind"] == "imagenet" and weights["requested"] == "imagenet"
    if weights.get("file"):
        assert weights["sha256"] == weights_file_sha256(image_tags["pytorch"], weights["file"])
    exporter = rec["exporter"]
    assert exporter["name"] == "torch.onnx.export" and exporter["version"] and exporter["opset"] == 17
    assert rec["input"]["layout"] == "NCHW" and rec["input"]["shape"] == [None, 3, 224, 224]
    assert rec["input"]["dtype"] == "float32" and rec["output"]["num_classes"] == 1000
    assert rec["preprocessing"] == listed_preprocessing(image_tags["pytorch"], LITE0)
    assert rec["probe"] == {"file": "probe.npz", "batch": 2, "seed": 0}
    assert set(rec["files"]) >= {"model.onnx", "probe.npz"}
    assert rec["files"] == {name: file_sha256(folder / name) for name in rec["files"]}
    assert [p.name for p in folder.parent.iterdir()] == ["imagenet"]  # no work folder left

    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = zoobench(*CONVERT, "--model", LITE0, env=cache_env(root), timeout=1800)
    assert again.returncode == 0, again.stderr
    assert len(lines_with(again.stdout, "cached (the record matches)")) == 1, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps

    flip_byte(folder / "model.onnx")
    tampered = zoobench(*CONVERT, "--model", LITE0, env=cache_env(root), timeout=1800)
    assert tampered.returncode == 1, (tampered.stdout, tampered.stderr)
    text = tampered.stdout + tampered.stderr
    assert "Traceback" not in text, text
    refused = lines_with(text, "model.onnx")
    assert len(refused) == 1 and "sha256" in refused[0] and "--force" in refused[0] and "failed" in refused[0], text
    assert record_of(folder) == rec  # nothing overwritten without --force

    forced = zoobench(*CONVERT, "--model", LITE0, "--force", env=cache_env(root), timeout=1800)
    assert forced.returncode == 0, forced.stderr
    assert len(lines_with(forced.stdout, "converted in")) == 1, forced.stdout
    rec = record_of(folder)
    assert rec["files"] == {name: file_sha256(folder / name) for name in rec["files"]}
    assert [p.name for p in folder.parent.iterdir()] == ["imagenet"]  # no work folder left

    # A record another image made (as after a rebuild of the source image) is not current: converted again.
    (folder / "convert.json").write_text(json.dumps({**rec, "source": {**rec["source"], "image_id": "sha256:0"}}))
    stale = zoobench(*CONVERT, "--model", LITE0, env=cache_env(root), timeout=1800)
    assert stale.returncode == 0 and len(lines_with(stale.stdout, "converted in")) == 1, (stale.stdout, stale.stderr)
    assert record_of(folder)["source"]["image_id"] == image_id(image_tags["pytorch"])


def test_one_failed_model_does_not_stop_the_others(image_tags, tmp_path):
    root = tmp_path / "converted"
    proc = zoobench(*CONVERT, "--model", LITE0, "--model", "no_such_net", env=cache_env(root), timeout=1800)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    failed = lines_with(text, "pytorch no_such_net (imagenet) -> onnx: failed: ")
    assert len(failed) == 1 and "no_such_net" in failed[0].split("failed: ", 1)[1], text
    assert len(lines_with(text, f"pytorch {LITE0} (imagenet) -> onnx: converted in")) == 1, text
    rec = record_of(folder_of(root, image_tags))
    assert rec["source"]["model"] == LITE0
    assert not folder_of(root, image_tags, "no_such_net").exists()


@pytest.mark.parametrize("args, needle", [
    (("--from", "onnxruntime", "--model", LITE0), "--from onnxruntime: a runtime image"),
    (("--from", "nope", "--model", LITE0), "--from 'nope': no such image"),
    (("--from", "pytorch", "--to", "tflite", "--model", LITE0), "--to 'tflite'"),
    (("--from", "pytorch"), "give --model NAME"),
    (("--from", "pytorch", "--model", LITE0, "--weights", "/some/file"), "--weights /some/file"),
])
def test_a_bad_request_is_one_line(tmp_path, args, needle):
    root = tmp_path / "converted"
    one_line_error(zoobench("convert", "--no-build", *args, env=cache_env(root), timeout=300), needle)
    assert not root.exists()


def test_convert_a_profile_converts_what_its_runtime_images_serve(image_tags, tmp_path):
    root = tmp_path / "converted"
    proc = zoobench(*CONVERT, "--profile", "sample", env=cache_env(root), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    # the sample profile's PyTorch model is the one its runtime images (onnxruntime, openvino) serve: once
    assert len(lines_with(proc.stdout, "-> onnx: converted in")) == 1, proc.stdout
    assert len(lines_with(proc.stdout, f"pytorch {LITE0} (imagenet) -> onnx: converted in")) == 1, proc.stdout
    assert [p.name for p in folder_of(root, image_tags).parent.parent.iterdir()] == [LITE0]
    assert record_of(folder_of(root, image_tags))["weights"]["requested"] == "imagenet"


def bench(results: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return zoobench("run", "--profile", "sample", "--model", RUNTIME_MODEL, "--results", str(results), "--limit", "2",
                    "--no-build", *extra, env=cache_env(root), timeout=1800)


def test_a_runtime_run_carries_its_conversion_key_and_other_weights_run_again(image_tags, tmp_path):
    results, root = tmp_path / "results", tmp_path / "converted"
    proc = bench(results, root)
    assert proc.returncode == 0, proc.stderr
    assert f"pytorch {LITE0} (imagenet) -> onnx: converted" in proc.stderr, proc.stderr
    run = json.loads((results / RUNTIME_RUN / "run.json").read_text())
    assert run["weights"]["kind"] == "imagenet", run["weights"]
    rec = record_of(folder_of(root, image_tags))
    key = json.loads((results / RUNTIME_RUN / "request.json").read_text())["request"]["conversion"]
    assert key == resume_key(rec)
    assert key["source_image_id"] == image_id(image_tags["pytorch"]) and key["files"] == rec["files"]
    assert run["converted"]["record_sha256"] == file_sha256(folder_of(root, image_tags) / "convert.json")

    again = bench(results, root)
    assert again.returncode == 0 and "reused" in again.stderr, again.stderr
    assert "cached (the record matches)" in again.stderr, again.stderr

    rand = bench(results, root, "--weights", "random")
    assert rand.returncode == 0, rand.stderr
    assert f"pytorch {LITE0} (random) -> onnx: converted" in rand.stderr, rand.stderr
    assert "reused" not in rand.stderr, rand.stderr
    assert folder_of(root, image_tags, weights="random").is_dir()
    run_random = json.loads((results / RUNTIME_RUN / "run.json").read_text())
    assert run_random["weights"]["kind"] != run["weights"]["kind"]
    key = json.loads((results / RUNTIME_RUN / "request.json").read_text())["request"]["conversion"]
    assert key == resume_key(record_of(folder_of(root, image_tags, weights="random"))) and key["weights"] == "random"


def test_a_tampered_conversion_fails_its_runtime_run_and_keeps_the_earlier_one(image_tags, tmp_path):
    results, root = tmp_path / "results", tmp_path / "converted"
    assert bench(results, root).returncode == 0
    published = (results / RUNTIME_RUN / "run.json").read_bytes()
    flip_byte(folder_of(root, image_tags) / "model.onnx")
    proc = bench(results, root)
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    failed = lines_with(proc.stderr, "conversion failed:")
    assert failed and any("sha256" in line and "model.onnx" in line for line in failed), proc.stderr
    assert (results / RUNTIME_RUN / "run.json").read_bytes() == published  # the finished run is never lost


def test_speed_of_a_runtime_model_mounts_the_conversions(image_tags, tmp_path):
    results, root = tmp_path / "speed-results", tmp_path / "converted"
    proc = zoobench("speed", "--profile", "sample", "--model", RUNTIME_MODEL, "--batch-sizes", "1", "--warmup", "1",
                    "--iterations", "2", "--results", str(results), "--no-build", env=cache_env(root), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert (results / "speed" / RUNTIME_RUN / "bench.json").is_file(), sorted(p.name for p in results.rglob("*"))


def test_no_conversion_container_is_left_behind(image_tags):
    left = subprocess.run(["docker", "ps", "-a", "--filter", "label=zoobench.role=convert", "-q"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []
