"""Model facts (parameters, multiply-adds) as each framework counts them: ``predict facts``, run.json's
``model_facts``, ``--facts`` given by the orchestrator, and the orchestrator's per-image cache.

The unit tests need no engine; the ``docker`` ones run the real images (the counts each framework
reports, checked against the published figures: torchvision's ``num_params`` and ``_ops``, the Keras
table in docs/performance.md)."""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from zoobench_contract import cli
from zoobench_contract import facts as contract_facts
from zoobench_contract.backend import ModelSpec
from zoobench_contract.preprocessing import Preprocessing

from orchestrator.bench import imagefacts
from orchestrator.bench.plan import PlanOptions, predict_run_args
from orchestrator.bench.service import BenchRequest, plan_images, prepare
from orchestrator.images import build as images
from orchestrator.paths import MANIFEST_DIR

from zoobench_contract.runtime import UserError

from test_contract_cli import NumpyBackend, data, predict  # noqa: F401 - `data` is a fixture


class CountingBackend(NumpyBackend):
    """The numpy backend with a ``model_facts`` of its own: one Dense layer, 768 x 1000."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        super().__init__()
        self.counted: list[int] = []
        self.count_fails_with = fail_with

    def model_facts(self, model, spec, crop_size):
        self.counted.append(crop_size)
        if self.count_fails_with is not None:
            raise self.count_fails_with
        n = crop_size * crop_size * 3 * 1000
        return {"params": {"total": int(model.size), "trainable": int(model.size), "counter": "numpy size"},
                "macs": {"value": n, "input_size": [crop_size, crop_size], "counter": "x @ w",
                         "convention": contract_facts.CONVENTION, "why": None}, "schema": 1}


@pytest.fixture
def counting(monkeypatch):
    b = CountingBackend()
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    monkeypatch.setattr(contract_facts, "load_backend", lambda: b)
    return b


# ---------------------------------------------------------------- the contract, in-process


def test_facts_for_counts_with_the_backend_and_says_when_it_cannot():
    b = CountingBackend()
    record = contract_facts.facts_for(b, b.w, b.spec, 16, None)
    assert record["params"] == {"total": 768000, "trainable": 768000, "counter": "numpy size"}
    assert record["macs"]["value"] == 768000 and record["macs"]["input_size"] == [16, 16]
    assert (record["schema"], record["model"], record["framework"], record["input_size"]) == (1, "linear", "numpy", [16, 16])
    assert record["why"] is None

    plain = NumpyBackend()  # no model_facts at all
    record = contract_facts.facts_for(plain, plain.w, plain.spec, 16, None)
    assert record["params"] is None and record["macs"] is None
    assert record["why"] == "the numpy backend has no model_facts"

    broken = CountingBackend(fail_with=RuntimeError("no graph\nsecond line"))
    record = contract_facts.facts_for(broken, broken.w, broken.spec, 16, None)
    assert record["params"] is None and record["macs"] is None
    assert record["why"] == "counting failed (RuntimeError: no graph)"


def test_given_facts_are_used_verbatim_and_checked():
    b = CountingBackend()
    given = json.dumps(contract_facts.facts_for(b, b.w, b.spec, 16, None))
    b.counted.clear()
    assert contract_facts.facts_for(b, b.w, b.spec, 16, given) == json.loads(given)
    assert b.counted == []  # nothing counted again

    def refused(text: str, needle: str, crop: int = 16) -> None:
        with pytest.raises(UserError, match=needle) as info:
            contract_facts.facts_for(b, b.w, b.spec, crop, text)
        assert "\n" not in str(info.value)

    record = json.loads(given)
    refused("{not json", "not JSON")
    refused("[1, 2]", "JSON object")
    refused(json.dumps({**record, "model": "resnet50"}), "of model 'resnet50', this run is of 'linear'")
    refused(json.dumps({**record, "framework": "keras"}), "counted by 'keras'")
    refused(given, r"input size \[16, 16\], this run uses \[32, 32\]", crop=32)
    refused(json.dumps({**record, "schema": 7}), "schema 7")
    refused(json.dumps({k: v for k, v in record.items() if k != "macs"}), "no 'macs' record")


def test_predict_facts_prints_one_json_line(counting, capsys):
    assert predict("facts", "--model", "linear") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    record = json.loads(out[0])
    assert record["model"] == "linear" and record["input_size"] == [16, 16] and record["macs"]["value"] == 768000
    assert predict("facts", "--model", "linear", "--crop-size", "8") == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == [8, 8]
    assert counting.counted == [16, 8]


def test_predict_facts_refuses_an_unknown_model_in_one_line(counting, capsys):
    assert predict("facts", "--model", "nope") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'nope'")


def test_run_records_counted_or_given_facts(counting, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out), "--weights", "random") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model_facts"]["macs"]["value"] == 768000 and counting.counted == [16]

    given = {**run["model_facts"], "params": {"total": 1, "trainable": 1, "counter": "given"}}
    out2 = tmp_path / "out2"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out2), "--weights", "random",
                   "--facts", json.dumps(given)) == 0
    assert json.loads((out2 / "run.json").read_text())["model_facts"] == given  # verbatim, not counted again
    assert counting.counted == [16]

    capsys.readouterr()
    other = json.dumps({**given, "model": "resnet18"})
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o3"), "--weights",
                   "random", "--facts", other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--facts: the facts are of model 'resnet18', this run is of 'linear'" in err[0]
    assert not (tmp_path / "o3" / "run.json").exists()


def test_a_failing_count_does_not_fail_the_run(monkeypatch, data, tmp_path):
    b = CountingBackend(fail_with=ValueError("shape mismatch"))
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path), "--weights", "random") == 0
    facts = json.loads((tmp_path / "run.json").read_text())["model_facts"]
    assert facts["params"] is None and facts["why"] == "counting failed (ValueError: shape mismatch)"


# ---------------------------------------------------------------- the orchestrator's cache and plan


class FakeContainer:
    def __init__(self, stdout: bytes, code: int = 0) -> None:
        self.stdout, self.code, self.removed = stdout, code, False

    def start(self):
        pass

    def wait(self, timeout=None):
        return {"StatusCode": self.code}

    def logs(self, stdout=True, stderr=False):
        return self.stdout if stdout else b"error: boom"

    def remove(self, force=False, v=False):
        self.removed = True


class FakeClient:
    """Just enough docker client for `predict facts` in a container."""

    def __init__(self, stdout: bytes, code: int = 0) -> None:
        self.created: list[tuple[str, list[str], dict]] = []
        self.stdout, self.code = stdout, code
        self.containers = self
        self.made: list[FakeContainer] = []

    def create(self, image, command=None, **kwargs):
        self.created.append((image, command, kwargs))
        self.made.append(FakeContainer(self.stdout, self.code))
        return self.made[-1]


@pytest.fixture
def models_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefacts, "MODELS_CACHE", tmp_path / "models")
    monkeypatch.setattr(imagefacts.containers, "engine_settings", lambda client: {})
    return tmp_path / "models"


def test_model_facts_run_once_per_tag_model_and_size(models_cache):
    record = {"schema": 1, "model": "resnet18", "input_size": [224, 224], "params": None, "macs": None, "why": "x"}
    client = FakeClient(b"a log line\n" + json.dumps(record).encode() + b"\n")
    tag = "zoobench/pytorch:cpu-0123"
    text = imagefacts.model_facts(client, tag, "resnet18", 224)
    assert json.loads(text) == record
    image, command, settings = client.created[0]
    assert image == tag and command == ["facts", "--model", "resnet18", "--crop-size", "224"]
    assert settings["network_mode"] == "none" and settings["read_only"] and settings["cap_drop"] == ["ALL"]
    assert client.made[0].removed
    cached = models_cache / "zoobench_pytorch_cpu-0123" / "facts" / "resnet18-224.json"
    assert json.loads(cached.read_text()) == record

    assert imagefacts.model_facts(client, tag, "resnet18", 224) == text and len(client.created) == 1  # cached
    assert imagefacts.model_facts(None, tag, "resnet18", 224) == text  # a host without an engine reads it too
    assert imagefacts.model_facts(None, tag, "resnet18", 160) is None  # not cached, no engine
    assert imagefacts.model_facts(client, tag, "resnet18", None) is None


def test_model_facts_failures_are_none_and_not_cached(models_cache):
    tag = "zoobench/keras:cpu-0123"
    assert imagefacts.model_facts(FakeClient(b"", code=2), tag, "resnet50", 224) is None  # an old image
    assert imagefacts.model_facts(FakeClient(b"not json"), tag, "resnet50", 224) is None
    other = json.dumps({"schema": 1, "model": "vgg16"}).encode()
    assert imagefacts.model_facts(FakeClient(other), tag, "resnet50", 224) is None  # another model's
    assert not models_cache.exists() or not list(models_cache.rglob("*.json"))


def test_plan_images_gives_each_job_its_facts(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "image_tag", lambda spec, variant, root: f"zoobench/{spec.name}:{variant}-test")
    listing = {"efficientnet_lite0": {"preprocessing": {"crop_size": 224, "resize_size": 256}}}
    monkeypatch.setattr(imagefacts, "served_models", lambda client, tag: listing)
    monkeypatch.setattr(imagefacts, "image_id", lambda client, tag: f"sha256:{tag}")
    asked: list[tuple[str, str, int]] = []

    def fake_facts(client, tag, model, crop):
        asked.append((tag, model, crop))
        return json.dumps({"model": model, "tag": tag})

    monkeypatch.setattr(imagefacts, "model_facts", fake_facts)
    only = [f"{image}/efficientnet_lite0" for image in ("pytorch", "keras", "mxnet")]  # no conversion to make
    req = BenchRequest(manifests=MANIFEST_DIR, results=tmp_path / "r", build=False, plan=PlanOptions(only=only))
    setup = prepare(req)
    jobs, _ = plan_images(req, setup, object(), Console(file=io.StringIO()))
    assert sorted(asked) == sorted((j.tag, "efficientnet_lite0", 224) for j in jobs) and len(jobs) == 3
    for job in jobs:
        args = predict_run_args(job, 8, "cpu", "/data", "imagenet")
        assert args[args.index("--facts") + 1] == json.dumps({"model": job.model, "tag": job.tag})

    asked.clear()  # no engine here (a Slurm login node): the runs count the facts themselves
    jobs, _ = plan_images(req, setup, None, Console(file=io.StringIO()))
    assert asked == [] and all("--facts" not in predict_run_args(j, 8, "cpu", "/d", "imagenet") for j in jobs)


# ---------------------------------------------------------------- in the real images


def facts_in(tag: str, model: str, *extra: str) -> dict:
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "facts", "--model", model, *extra],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def within(value: int | None, expected: float, tolerance: float) -> bool:
    return value is not None and abs(value - expected) <= tolerance * expected


@pytest.mark.docker
def test_pytorch_resnets_match_torchvision(image_tags):
    r18 = facts_in(image_tags["pytorch"], "resnet18")
    assert r18["params"]["total"] == r18["params"]["trainable"] == 11_689_512  # torchvision num_params
    assert within(r18["macs"]["value"], 1.814e9, 0.01), r18["macs"]  # torchvision _ops 1.814, timm 1.82
    assert r18["macs"]["input_size"] == [224, 224] and "divided by 2" in r18["macs"]["convention"]
    r50 = facts_in(image_tags["pytorch"], "resnet50")
    assert r50["params"]["total"] == 25_557_032
    assert within(r50["macs"]["value"], 4.089e9, 0.02), r50["macs"]
    big = facts_in(image_tags["pytorch"], "resnet18", "--crop-size", "448")
    assert big["input_size"] == [448, 448] and within(big["macs"]["value"], 4 * r18["macs"]["value"], 0.001)


@pytest.mark.docker
def test_a_random_build_is_the_architecture_of_the_imagenet_weights(image_tags):
    """``predict facts`` builds with random weights: GoogLeNet without the auxiliary heads its ImageNet
    weights drop (torchvision num_params 6,624,904), ViT-H/14 at its weights' 518 px."""
    googlenet = facts_in(image_tags["pytorch"], "googlenet")
    assert googlenet["params"]["total"] == 6_624_904
    assert within(googlenet["macs"]["value"], 1.498e9, 0.01), googlenet["macs"]  # torchvision _ops 1.498


@pytest.mark.docker
def test_keras_resnet50_is_its_own(image_tags):
    """keras.applications ResNet50 is not torchvision's: biases on its convolutions, and count_params()
    counts the batch-norm moving statistics too (25,636,712; torchvision's parameters() 25,557,032)."""
    r50 = facts_in(image_tags["keras"], "resnet50")
    assert r50["params"]["total"] == 25_636_712 and r50["params"]["trainable"] == 25_583_592
    assert within(r50["macs"]["value"], 3.858e9, 0.02), r50["macs"]  # docs/performance.md: 3.858 GMACs
    assert r50["macs"]["why"] is None


@pytest.mark.docker
def test_mxnet_resnet50_v1_two_routes(image_tags):
    """Gluon's resnet50_v1 strides in the first 1x1 convolution of a block (ResNet v1 as published, like
    Keras) where torchvision strides in the 3x3 (v1.5): fewer multiply-adds (3.858 G, not 4.089 G)."""
    r50 = facts_in(image_tags["mxnet"], "resnet50_v1")
    assert within(r50["macs"]["value"], 3.858e9, 0.02), r50["macs"]  # as Keras' ResNet50, not torchvision's 4.089
    script = """
import json, math, mxnet as mx
from mxnet.gluon.model_zoo import vision
net = vision.get_model("resnet50_v1"); net.initialize(); net(mx.nd.zeros((1, 3, 224, 224)))
arrays = sum(p.data().size for p in net.collect_params().values())
trainable = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
sym = net(mx.sym.var("data")); args, _, aux = sym.infer_shape(data=(1, 3, 224, 224))
graph = sum(math.prod(s) for n, s in zip(sym.list_arguments(), args) if n != "data") + sum(math.prod(s) for s in aux)
print(json.dumps([arrays, trainable, graph]))
"""
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
                           image_tags["mxnet"], "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    arrays, trainable, graph = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r50["params"]["total"] == arrays == graph and r50["params"]["trainable"] == trainable
    assert (arrays, trainable) == (25_629_032, 25_575_912)  # biases on its 1x1 convolutions: torchvision has none


@pytest.mark.docker
def test_lite0_is_the_same_model_in_every_image(image_tags):
    """The same weights ported: 4,652,008 trainable parameters everywhere (torch's parameters()); Keras'
    count_params() and Gluon's collect_params() also hold the batch-norm moving statistics."""
    found = {fw: facts_in(image_tags[fw], "efficientnet_lite0") for fw in ("pytorch", "keras", "mxnet")}
    for fw, record in found.items():
        assert record["params"]["trainable"] == 4_652_008, (fw, record["params"])
        assert record["macs"]["value"] is not None, (fw, record["macs"])
    assert found["pytorch"]["params"]["total"] == 4_652_008
    assert found["keras"]["params"]["total"] == found["mxnet"]["params"]["total"]
    macs = [r["macs"]["value"] for r in found.values()]
    assert max(macs) - min(macs) <= 0.01 * min(macs), macs
