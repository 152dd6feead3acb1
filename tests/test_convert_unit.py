"""Conversions on the orchestrator side, without a container: the names a profile's runtime images list,
the cache's layout and record checks (a changed file is refused in one line), the resume key a runtime job
carries, and conversion fidelity and run labels scored on the published predictions (50,000 val images)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from orchestrator.bench.plan import Job
from orchestrator.convert import records
from orchestrator.convert.bench import BenchConversions, converted_binds
from orchestrator.convert.needs import conversions_of, split_name
from orchestrator.convert.records import Conversion, checked_record, file_problem, is_current, resume_key
from orchestrator.convert.service import ConvertOutcome
from orchestrator.errors import ConvertError
from orchestrator.images import manifest as image_manifest
from orchestrator.manifests import get_profile
from orchestrator.results.compare import compare_runs, one_run
from orchestrator.results.fidelity import fidelity_rows, pair_fidelity
from orchestrator.results.ranking import load_results
from orchestrator.results.stats import mcnemar_exact
from test_northcutt import convert
from zoobench_contract.dataset import file_sha256

SPECS = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
TAGS = {name: f"zoobench/{name}:cpu-0123456789ab" for name in SPECS}


def test_runtime_model_names_split_on_the_longest_source_image():
    sources = ["keras", "keras-torch", "pytorch", "mxnet"]
    assert split_name("keras-torch.efficientnet_lite0", sources) == ("keras-torch", "efficientnet_lite0")
    assert split_name("keras.resnet50", sources) == ("keras", "resnet50")
    assert split_name("mxnet.mobilenetv2_0.5", sources) == ("mxnet", "mobilenetv2_0.5")
    assert split_name("resnet50", sources) is None and split_name("pytorch.", sources) is None


def test_the_sample_profile_needs_one_conversion_per_source_model():
    prof = get_profile("sample", ROOT / "manifests")
    convs = conversions_of(prof, SPECS, TAGS)
    assert convs == [Conversion("pytorch", TAGS["pytorch"], "efficientnet_lite0", "imagenet")]  # both runtimes share it
    assert conversions_of(prof, SPECS, TAGS, only=["pytorch/efficientnet_lite0"]) == []
    assert conversions_of(prof, SPECS, TAGS, only=["openvino/pytorch.efficientnet_lite0"], weights="random") == [
        Conversion("pytorch", TAGS["pytorch"], "efficientnet_lite0", "random")]


def test_a_runtime_model_without_a_source_is_one_line():
    prof = get_profile("sample", ROOT / "manifests").model_copy(update={"models": {"onnxruntime": ["resnet50"]}})
    with pytest.raises(ConvertError, match="SOURCE.MODEL"):
        conversions_of(prof, SPECS, TAGS)
    prof = prof.model_copy(update={"models": {"onnxruntime": "all"}})
    with pytest.raises(ConvertError, match="`all` means nothing for a runtime image"):
        conversions_of(prof, SPECS, TAGS)


def make_conversion(root: Path, conv: Conversion, image_id: str = "sha256:img", weights_sha: str | None = "w1") -> Path:
    """A finished conversion as `zoobench convert` leaves it: files, then convert.json naming their sha256."""
    folder = conv.folder(root)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx-bytes")
    (folder / "probe.npz").write_bytes(b"probe")
    files = {n: file_sha256(folder / n) for n in ("model.onnx", "probe.npz")}
    record = {"schema": records.RECORD_SCHEMA, "format": "onnx", "files": files,
              "source": {"image": conv.source, "model": conv.model, "image_id": image_id},
              "weights": {"requested": conv.weights, "sha256": weights_sha},
              "exporter": {"name": "torch.onnx.export", "version": "2.14.1", "opset": 17},
              "preprocessing": {"crop_size": 224}, "output": {"num_classes": 1000}}
    (folder / "convert.json").write_text(json.dumps(record))
    return folder


def test_cache_layout_record_checks_and_resume_key(tmp_path):
    conv = Conversion("pytorch", "zoobench/pytorch:cpu-0123456789ab", "resnet50", "imagenet:IMAGENET1K_V1")
    assert conv.folder(tmp_path) == tmp_path / "onnx/pytorch/cpu-0123456789ab/resnet50/imagenet@IMAGENET1K_V1"
    assert checked_record(conv, tmp_path) is None  # never converted
    folder = make_conversion(tmp_path, conv)
    record = checked_record(conv, tmp_path)
    assert record is not None and is_current(record, "sha256:img", "w1")
    assert not is_current(record, "sha256:other-image", "w1")  # a rebuilt source image converts again
    assert not is_current(record, "sha256:img", "w2")  # so do changed weights
    key = resume_key(record)
    assert (key["source_image_id"], key["weights_sha256"], key["exporter_version"], key["opset"]) == (
        "sha256:img", "w1", "2.14.1", 17)
    (folder / "model.onnx").write_bytes(b"onnx-bytez")  # tampered: same size, one byte changed
    with pytest.raises(ConvertError) as err:
        checked_record(conv, tmp_path)
    line = str(err.value)
    assert "\n" not in line and "model.onnx: sha256" in line and "does not match convert.json" in line
    assert "--force" in line
    (folder / "model.onnx").unlink()
    assert "missing" in file_problem(folder, record["files"], "convert.json")


def test_a_runtime_job_mounts_its_source_and_keys_on_the_record(tmp_path):
    conv = Conversion("pytorch", TAGS["pytorch"], "efficientnet_lite0", "imagenet")
    record = json.loads((make_conversion(tmp_path, conv) / "convert.json").read_text())
    found = BenchConversions({("onnxruntime", conv.name): (conv, record)}, runtimes={"onnxruntime", "openvino"},
                             wanted={"onnxruntime": [conv.name, "pytorch.vit_h_14", "pytorch.resnet18"]})
    failed = Conversion("pytorch", TAGS["pytorch"], "vit_h_14", "imagenet")
    found.failed = [ConvertOutcome(failed, "failed", "export failed: out of memory")]
    listing = found.listing("onnxruntime")
    assert listing[conv.name]["preprocessing"] == {"crop_size": 224}
    assert {"pytorch.vit_h_14", "pytorch.resnet18"} <= set(listing)  # planned (and failed), or not selected
    job = Job("onnxruntime", TAGS["onnxruntime"], conv.name, "imagenet", 32, 60, {}, None)
    attached = found.attach(job)
    assert attached.converted == (("pytorch", str(conv.source_folder())),)
    assert converted_binds(attached.converted)[0].target == "/converted/pytorch"
    request = attached.request("sha256:runtime", "sha256:data")
    assert request["conversion"] == resume_key(record) and "conversion" not in job.request("sha256:runtime", "d")
    other = dict(record, source={**record["source"], "image_id": "sha256:rebuilt"})
    assert BenchConversions({("onnxruntime", conv.name): (conv, other)}).attach(job).request("x", "d") != request
    assert found.failure(attached) is None
    assert found.failure(Job("onnxruntime", "t", "pytorch.vit_h_14", "imagenet", 1, 1, {}, None)) == \
        "conversion failed: export failed: out of memory"
    assert found.failure(Job("pytorch", "t", "vit_h_14", "imagenet", 1, 1, {}, None)) is None


@pytest.fixture(scope="module")
def converted_results(northcutt_dir, tmp_path_factory):
    """The published PyTorch ResNet-50 run as a source, and the published Keras ResNet-50 predictions standing in
    for its conversion (a runtime run whose run.json says it was converted from pytorch resnet50)."""
    out = tmp_path_factory.mktemp("fidelity") / "results"
    convert(northcutt_dir, out, flat=False, only={"pytorch-resnet50", "keras-resnet50"})
    target = out / "onnxruntime-pytorch.resnet50"
    (out / "keras-resnet50").rename(target)
    run = json.loads((target / "run.json").read_text())
    run.update(framework="onnxruntime", framework_version="1.32.0", model="pytorch.resnet50",
               converted={"source": {"image": "pytorch", "model": "resnet50"}, "format": "onnx",
                          "exporter": {"name": "torch.onnx.export", "version": "2.14.1", "opset": 17},
                          "probe": {"batch": 2, "max_abs_logit_diff": 3.6e-6}})
    (target / "run.json").write_text(json.dumps(run))
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_fidelity_of_a_converted_run_against_its_source(converted_results):
    results, _ = load_results(converted_results)
    by_run = {r.run: r for r in results}
    assert by_run["onnxruntime-pytorch.resnet50"].platform == "onnxruntime 1.32.0 (pytorch resnet50)"
    [fid] = fidelity_rows(results)
    c = compare_runs(one_run(converted_results / "pytorch-resnet50"),
                     one_run(converted_results / "onnxruntime-pytorch.resnet50"))
    src, conv = by_run["pytorch-resnet50"], by_run["onnxruntime-pytorch.resnet50"]
    assert fid.comparison.n_shared == 50_000 and fid.comparison.top1_agreement == c.top1_agreement
    assert fid.comparison.acc1_a == src.acc1 and fid.comparison.acc1_b == conv.acc1
    assert fid.acc1_diff_points == pytest.approx(100 * (conv.acc1 - src.acc1))
    assert fid.comparison.p_mcnemar == mcnemar_exact(c.only_a, c.only_b)
    assert fid.within_mlperf == (conv.acc1 >= 0.99 * src.acc1) and not fid.within_mlperf  # 74.9 % vs 76.1 %
    assert fid.max_abs_logit_diff == 3.6e-6 and fid.exporter == "torch.onnx.export 2.14.1"
    pair = pair_fidelity(converted_results / "onnxruntime-pytorch.resnet50", converted_results / "pytorch-resnet50")
    assert pair is not None and pair.to_dict() == fid.to_dict()
    assert pair_fidelity(converted_results / "pytorch-resnet50", converted_results / "pytorch-resnet50") is None
