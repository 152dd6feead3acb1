"""``predict export`` in the real source images: the ONNX file, ``probe.npz`` and ``export.json`` (every
field, every sha256), the file read back by the contract's own reader and by the ``onnx`` package in the
same image (``onnx.checker``), and the one-line refusals (unknown model, bad request, a failing exporter).
The fidelity of the exported models (ONNX Runtime against the probe logits) is tested with the runtimes."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, require
from zoobench_contract.dataset import file_sha256
from zoobench_contract.export import onnx_signature

pytestmark = pytest.mark.docker

WHAT = {"pytorch": ("pytorch", "NCHW"), "keras": ("keras", "NHWC"), "keras-torch": ("keras", "NHWC"),
        "mxnet": ("mxnet", "NCHW")}
EXPORTER = {"pytorch": "torch.onnx.export", "keras": "keras.Model.export -> tf2onnx.convert.from_function",
            "keras-torch": "keras.Model.export -> torch.onnx.export (TorchScript, dynamo=False)",
            "mxnet": "mx.onnx.export_model"}
KERAS_BACKEND = {"keras": "tensorflow", "keras-torch": "torch"}


def image(image_tags: dict[str, str], name: str) -> str:
    tag = image_tags.get(name)
    found = tag is not None and subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
    require(found, f"image {name} ({tag}) is not built: `zoobench images build {name} --variant cpu`")
    return tag


def export(tag: str, out: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)  # the image runs as its non-root user
    return subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/out", tag, "export", *args],
                          capture_output=True, text=True, timeout=timeout)


def onnx_in_image(tag: str, folder: Path) -> dict:
    """The model loaded and checked by the image's own ``onnx`` package."""
    code = ("import json, onnx; p = '/x/model.onnx'; m = onnx.load(p); onnx.checker.check_model(p); "
            "print(json.dumps({'onnx': onnx.__version__, 'opset': [o.version for o in m.opset_import if o.domain "
            "in ('', 'ai.onnx')], 'inputs': [i.name for i in m.graph.input], 'outputs': [o.name for o in "
            "m.graph.output], 'initializers': len(m.graph.initializer)}))")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{folder}:/x:ro", "--entrypoint",
                           "python", tag, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_export(folder: Path, tag: str, name: str, model: str, weights: str, size: int = 224) -> dict:
    """Everything ``export.json`` promises, checked against the files themselves."""
    framework, layout = WHAT[name]
    record = json.loads((folder / "export.json").read_text())
    assert (record["schema"], record["format"]) == (1, "onnx")
    source = record["source"]
    assert (source["framework"], source["model"], source["image_tag"]) == (framework, model, tag)
    assert source["framework_version"] == source["env"]["framework_version"]
    assert source.get("keras_backend") == KERAS_BACKEND.get(name)
    assert ("keras_backend" in source) == (framework == "keras")
    assert record["weights"]["kind"] == weights.split(":")[0] and record["weights"]["requested"] == weights
    exporter = record["exporter"]
    assert exporter["name"] == EXPORTER[name] and exporter["opset"] == 17 and exporter["version"]
    assert isinstance(exporter["options"], dict)
    shape = [None, 3, size, size] if layout == "NCHW" else [None, size, size, 3]
    assert record["input"] == {"name": record["input"]["name"], "layout": layout, "shape": shape, "dtype": "float32"}
    assert record["output"]["num_classes"] == 1000
    assert record["preprocessing"]["crop_size"] == size
    assert record["model_facts"]["model"] == model and record["model_facts"]["params"]["total"] > 0
    assert record["probe"] == {"file": "probe.npz", "batch": 2, "seed": 0}
    assert set(record["seconds"]) == {"load", "export", "probe"} and record["created"].endswith("Z")
    # files: every sha256 is the file's, and nothing else lies in the folder
    assert record["files"]["model.onnx"] and "probe.npz" in record["files"]
    assert {p.name for p in folder.iterdir()} == {*record["files"], "export.json"}
    for file, digest in record["files"].items():
        assert file_sha256(folder / file) == digest, file
    with np.load(folder / "probe.npz", allow_pickle=False) as probe:
        x, logits = probe["input"], probe["logits"]
    assert x.shape == (2, size, size, 3) and x.dtype == np.float32
    assert np.array_equal(x, np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32))
    assert logits.shape == (2, 1000) and logits.dtype == np.float32 and np.isfinite(logits).all()
    # the contract's reader and the image's onnx agree with the record
    sig = onnx_signature(folder / "model.onnx")
    assert sig.opset == 17 and [v.name for v in sig.inputs] == [record["input"]["name"]]
    assert [v.name for v in sig.outputs] == [record["output"]["name"]]
    assert sig.inputs[0].dims[1:] == shape[1:] and not isinstance(sig.inputs[0].dims[0], int)
    loaded = onnx_in_image(tag, folder)
    assert loaded["opset"] == [17] and loaded["outputs"] == [record["output"]["name"]]
    assert loaded["inputs"] == [record["input"]["name"]]  # the weights are initializers, not inputs
    assert loaded["initializers"] > 0 and exporter["options"].get("onnx") == loaded["onnx"]
    return record


@pytest.mark.parametrize("model,weights", [("efficientnet_lite0", "imagenet"), ("resnet18", "random")])
def test_pytorch_export(image_tags, tmp_path, model, weights):
    tag = image(image_tags, "pytorch")
    proc = export(tag, tmp_path, "--model", model, "--weights", weights, "--out", "/out/x")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"pytorch {model} -> onnx opset 17 (") and line.endswith(" s") and "\n" not in line
    record = check_export(tmp_path / "x", tag, "pytorch", model, weights)
    assert (record["input"]["name"], record["output"]["name"]) == ("input", "logits")
    assert record["exporter"]["options"]["dynamo"] is False
    assert record["exporter"]["version"] == record["source"]["env"]["torch"]
    if weights == "imagenet":
        assert len(record["weights"]["sha256"]) == 64 and record["weights"]["file"]  # the bundled state dict


@pytest.mark.parametrize("name", ["keras", "keras-torch"])
def test_keras_export(image_tags, tmp_path, name):
    """Keras 3 on TensorFlow (tf2onnx) and on PyTorch (torch.onnx): the NHWC graph of the Lite0 port."""
    tag = image(image_tags, name)
    proc = export(tag, tmp_path, "--model", "efficientnet_lite0", "--out", "/out/x")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("keras efficientnet_lite0 -> onnx opset 17 (")
    record = check_export(tmp_path / "x", tag, name, "efficientnet_lite0", "imagenet")
    assert record["exporter"]["options"]["keras_backend"] == KERAS_BACKEND[name]


@pytest.mark.parametrize("model,weights", [("efficientnet_lite0", "imagenet"), ("resnet18_v1", "random")])
def test_mxnet_export(image_tags, tmp_path, model, weights):
    """mx2onnx of the hybridized Gluon model zoo and of the Lite0 port (a HybridBlock)."""
    tag = image(image_tags, "mxnet")
    proc = export(tag, tmp_path, "--model", model, "--weights", weights, "--out", "/out/x")
    assert proc.returncode == 0, proc.stderr
    record = check_export(tmp_path / "x", tag, "mxnet", model, weights)
    assert record["input"]["name"] == "data" and record["exporter"]["options"]["initializers_removed_from_inputs"] > 0


@pytest.mark.parametrize("name", ["pytorch", "keras", "mxnet"])
def test_unknown_model_is_one_line(image_tags, tmp_path, name):
    proc = export(image(image_tags, name), tmp_path, "--model", "no_such_net", "--out", "/out/x")
    one_line_error(proc, "unknown model 'no_such_net'")
    assert not (tmp_path / "x").exists()


def test_bad_requests_are_one_line(image_tags, tmp_path):
    tag = image(image_tags, "pytorch")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    cases = [(["--out", "/out/full"], "not empty"),
             (["--out", "/out/x", "--format", "tflite"], "--format 'tflite'"),
             (["--out", "/out/x", "--weights", "/weights/some.pth"], "export takes imagenet"),
             (["--out", "/out/x", "--weights", "imagenet:NOPE"], "has no variant NOPE")]
    for args, needle in cases:
        one_line_error(export(tag, tmp_path, "--model", "resnet18", *args), needle)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["old.txt"]


def test_a_failing_exporter_is_one_line_and_leaves_nothing(image_tags, tmp_path):
    tag = image(image_tags, "pytorch")
    proc = export(tag, tmp_path, "--model", "resnet18", "--weights", "random", "--opset", "99", "--out", "/out/x")
    one_line_error(proc, "export failed: ", code=1)
    assert not any((tmp_path / "x").iterdir())
