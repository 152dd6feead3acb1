"""zoobench_contract.converted without Docker or a runtime: hand-made conversion records and tiny files
below a temporary root, a numpy "runtime" standing in for ONNX Runtime / OpenVINO. Listing, the sha256
check (one line), the weights choice -> record selection (exit 4 naming `zoobench convert`), the NHWC ->
NCHW layout, the probe comparison, run.json's `converted` record, through the real `predict` CLI too."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import predict_in_process
from zoobench_contract import cli, converted
from zoobench_contract.backend import UsageError, WeightsUnavailable
from zoobench_contract.converted import ConvertedBackend, scan, select, to_layout, weights_choice, weights_dirname
from zoobench_contract.preprocessing import Preprocessing

CROP = 8
PREP = Preprocessing(crop_size=CROP, resize_size=10, interpolation="bilinear", mode="tf")
W = np.random.default_rng(0).standard_normal((3 * CROP * CROP, 1000)).astype(np.float32) / 20


def linear_nchw(x: np.ndarray) -> np.ndarray:
    """The 'exported model': a fixed linear map of the NCHW input."""
    assert x.shape[1] == 3, f"expected NCHW, got {x.shape}"
    return x.reshape(len(x), -1) @ W


def linear_nhwc(x: np.ndarray) -> np.ndarray:
    assert x.shape[-1] == 3, f"expected NHWC, got {x.shape}"
    return linear_nchw(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make(root: Path, source: str = "pytorch", model: str = "tiny", weights: str = "imagenet", layout: str = "NCHW",
         prep: Preprocessing = PREP, probe_noise: float = 0.0, facts: dict | None = None) -> Path:
    """One conversion as `zoobench convert` leaves it: model.onnx (any bytes here), probe.npz, convert.json."""
    folder = root / source / model / weights_dirname(weights)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not really onnx " + weights.encode())
    x = np.random.default_rng(0).standard_normal((2, prep.crop_size, prep.crop_size, 3)).astype(np.float32)
    logits = linear_nhwc(x) + np.float32(probe_noise)
    np.savez(folder / "probe.npz", input=x, logits=logits)
    shape = [None, 3, prep.crop_size, prep.crop_size] if layout == "NCHW" else [None, prep.crop_size, prep.crop_size, 3]
    record = {
        "schema": 1, "format": "onnx",
        "source": {"framework": source, "framework_version": "9.9", "image_tag": f"zoobench/{source}:cpu-abc",
                   "model": model, "env": {"huge": "environment"}, "image": source, "image_id": "sha256:1234"},
        "weights": {"kind": weights.split(":")[0], "requested": weights, "source": "the source's", "sha256": None},
        "exporter": {"name": "torch.onnx.export", "version": "2.14.1", "opset": 17, "options": {}},
        "input": {"name": "input", "layout": layout, "shape": shape, "dtype": "float32"},
        "output": {"name": "logits", "num_classes": 1000},
        "preprocessing": prep.to_dict(),
        "model_facts": facts or {"schema": 1, "model": model, "framework": source, "input_size": [CROP, CROP],
                                 "params": {"total": 10, "trainable": 10, "counter": "numel"},
                                 "macs": {"value": 99, "input_size": [CROP, CROP], "counter": "flops/2",
                                          "convention": "1 multiply-add = 1 MAC", "why": None}, "why": None},
        "probe": {"file": "probe.npz", "batch": 2, "seed": 0},
        "files": {"model.onnx": sha(folder / "model.onnx"), "probe.npz": sha(folder / "probe.npz")},
        "seconds": {"load": 0.1, "export": 0.2, "probe": 0.0}, "created": "2026-01-01T00:00:00Z",
        "zoobench": "0.1.0",
    }
    (folder / "export.json").write_text(json.dumps(record))
    (folder / "convert.json").write_text(json.dumps(record))
    return folder


class NumpyRuntime(ConvertedBackend):
    """A runtime whose 'compile' reads the layout from the record and returns the linear map."""

    framework = "numpyrt"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.compiled: list[str] = []

    def framework_version(self) -> str:
        return "0"

    def resolve_device(self, requested: str) -> str:
        return "cpu"

    def compile(self, conversion, device):
        self.compiled.append(conversion.weights)
        return linear_nchw if conversion.layout == "NCHW" else linear_nhwc

    def state_arrays(self, model):  # the base reads the ONNX initializers with `onnx` (in the images only)
        yield "w", W


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "converted"
    path.mkdir()
    return path


def test_nothing_mounted_lists_nothing(tmp_path):
    assert scan(tmp_path / "absent") == {}
    assert NumpyRuntime(tmp_path).models() == []


def test_weights_dirname_round_trips():
    for choice in ("imagenet", "imagenet:IMAGENET1K_V1", "random"):
        assert weights_choice(weights_dirname(choice)) == choice
    assert weights_dirname("imagenet:V1") == "imagenet@V1"


def test_listing_names_source_dot_model_with_the_records_preprocessing(root):
    make(root, weights="imagenet")
    make(root, weights="random")
    make(root, weights="imagenet:V1", prep=Preprocessing(crop_size=CROP, resize_size=12))
    make(root, source="keras-torch", model="other", layout="NHWC")
    (root / "pytorch" / "halfdone" / "imagenet").mkdir(parents=True)  # no convert.json: not listed
    (root / "pytorch" / "halfdone" / "imagenet" / "export.json").write_text("{}")
    broken = make(root, model="broken")
    (broken / "convert.json").write_text("{not json")
    specs = {s.name: s for s in NumpyRuntime(root).models()}
    assert sorted(specs) == ["keras-torch.other", "pytorch.tiny"]
    spec = specs["pytorch.tiny"]
    assert spec.preprocessing == PREP  # the imagenet record's, not the variant's
    assert spec.weights == "converted from pytorch tiny by torch.onnx.export 2.14.1"
    assert spec.weights_bundled and spec.num_classes == 1000 and spec.weights_files == {}
    assert spec.to_dict()["converted"] == {"source": "pytorch", "model": "tiny", "format": "onnx",
                                           "weights": ["imagenet", "imagenet:V1", "random"]}
    backend = NumpyRuntime(root)
    assert backend.preprocessing_for(spec, "imagenet:V1").resize_size == 12
    assert backend.preprocessing_for(spec, "imagenet:NOPE") == PREP


def test_weights_choice_selects_its_record(root):
    make(root, weights="imagenet")
    make(root, weights="imagenet:V1")
    backend = NumpyRuntime(root)
    spec = backend.models()[0]
    net = backend.load(spec, "imagenet:V1", "cpu")
    assert net.conversion.weights == "imagenet:V1" and net.conversion.folder.name == "imagenet@V1"
    assert backend.compiled == ["imagenet:V1"]
    assert backend.weights_path(spec, "imagenet:V1") == str(root / "pytorch" / "tiny" / "imagenet@V1" / "model.onnx")


def test_a_missing_weights_choice_is_exit_4_naming_zoobench_convert(root):
    make(root, weights="imagenet")
    backend = NumpyRuntime(root)
    with pytest.raises(WeightsUnavailable) as err:
        backend.load(backend.models()[0], "random", "cpu")
    line = str(err.value)
    assert "\n" not in line and "converted: imagenet" in line
    assert "zoobench convert --from pytorch --to onnx --model tiny --weights random" in line


def test_a_weights_file_is_refused(root, tmp_path):
    make(root)
    backend = NumpyRuntime(root)
    with pytest.raises(UsageError, match="serves converted models only"):
        backend.load(backend.models()[0], str(tmp_path / "w.pth"), "cpu")


def test_a_changed_file_is_one_line_naming_both_hashes(root):
    folder = make(root)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[3] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))
    backend = NumpyRuntime(root)
    with pytest.raises(UsageError) as err:
        backend.load(backend.models()[0], "imagenet", "cpu")
    line = str(err.value)
    record = json.loads((folder / "convert.json").read_text())
    assert "\n" not in line and line.startswith(f"{folder / 'model.onnx'}: sha256 {sha(folder / 'model.onnx')[:12]}...")
    assert f"does not match convert.json ({record['files']['model.onnx'][:12]}...)" in line
    assert "the converted model changed after zoobench convert" in line and "--force" in line
    assert backend.compiled == [], "a changed model must never reach the runtime"


def test_a_missing_listed_file_and_a_bad_record_are_one_line(root):
    folder = make(root)
    (folder / "probe.npz").unlink()
    backend = NumpyRuntime(root)
    with pytest.raises(UsageError, match="probe.npz: missing, convert.json lists it"):
        backend.load(backend.models()[0], "imagenet", "cpu")
    record = json.loads((folder / "convert.json").read_text())
    record["input"]["layout"] = "NCWH"
    (folder / "convert.json").write_text(json.dumps(record))
    make(root, weights="random")
    backend = NumpyRuntime(root)
    with pytest.raises(UsageError, match="input.layout must be one of NCHW, NHWC"):
        select(converted.scan(root)["pytorch.tiny"], "imagenet")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layout_is_what_the_record_says_and_the_probe_agrees(root, layout):
    make(root, layout=layout, probe_noise=0.25)
    backend = NumpyRuntime(root)
    net = backend.load(backend.models()[0], "imagenet", "cpu")
    assert net.probe_max_abs_logit_diff == pytest.approx(0.25, abs=1e-5)
    batch = np.random.default_rng(1).standard_normal((3, CROP, CROP, 3)).astype(np.float32)
    np.testing.assert_allclose(backend.predict(net, batch), linear_nhwc(batch), rtol=1e-6)
    with pytest.raises(UsageError, match=f"takes {CROP}x{CROP} input"):
        backend.predict(net, np.zeros((1, CROP + 2, CROP + 2, 3), np.float32))


def test_to_layout_transposes_nhwc_to_nchw():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    y = to_layout(x, "NCHW")
    assert y.shape == (2, 3, 4, 5) and y.flags.c_contiguous and y[1, 2, 3, 4] == x[1, 3, 4, 2]
    assert to_layout(x, "NHWC") is not None and np.array_equal(to_layout(x, "NHWC"), x)
    with pytest.raises(ValueError):
        to_layout(x, "CHWN")


def test_converted_record_and_facts(root):
    folder = make(root)
    backend = NumpyRuntime(root)
    spec = backend.models()[0]
    net = backend.load(spec, "imagenet", "cpu")
    rec = backend.converted_record(net)
    assert rec["record_sha256"] == sha(folder / "convert.json")
    assert "env" not in rec["source"] and rec["source"]["image_id"] == "sha256:1234"
    assert rec["exporter"]["opset"] == 17 and rec["format"] == "onnx" and rec["weights"]["requested"] == "imagenet"
    assert rec["probe"]["batch"] == 2 and rec["probe"]["max_abs_logit_diff"] < 1e-5
    facts = backend.model_facts(net, spec, CROP)
    assert facts["params"]["total"] == 10 and "counted by pytorch before the ONNX conversion" in facts["params"]["counter"]
    assert facts["macs"]["value"] == 99
    other = backend.model_facts(net, spec, CROP * 2)
    assert other["macs"]["value"] is None and "this run uses" in other["macs"]["why"]
    assert backend.facts_weights(spec) == "imagenet"


# ------------------------------------------------------------------ through the predict CLI


predict = predict_in_process  # noqa: E731 (the name these tests read best with)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "n01440764"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (14, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder.parent


def test_predict_list_run_and_refusals(root, data, tmp_path, monkeypatch, capsys):
    folder = make(root)
    backend = NumpyRuntime(root)
    monkeypatch.setattr(cli, "load_backend", lambda: backend)
    assert predict("list") == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["pytorch.tiny"]
    out = tmp_path / "out"
    assert predict("run", "--model", "pytorch.tiny", "--data", str(data), "--out", str(out)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["converted"]["record_sha256"] == sha(folder / "convert.json")
    assert run["converted"]["probe"]["max_abs_logit_diff"] < 1e-5
    assert run["weights"]["sha256"] == sha(folder / "model.onnx") and run["weights"]["kind"] == "imagenet"
    capsys.readouterr()
    assert predict("run", "--model", "pytorch.tiny", "--data", str(data), "--out", str(tmp_path / "o4"),
                   "--weights", "random") == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "zoobench convert --from pytorch" in err[0]
    (folder / "probe.npz").write_bytes(b"changed")
    assert predict("run", "--model", "pytorch.tiny", "--data", str(data), "--out", str(tmp_path / "o2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe.npz: sha256" in err[0] and not (tmp_path / "o2").exists()
