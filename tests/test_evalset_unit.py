"""Benching a set other than val, without containers: the datasets manifest, the set a bench runs on
(generated or official, class subset, layout checks), its arguments, resume key, results place, the
``--data NAME=DIR`` pairs, Slurm's plan and the rendered Kubernetes Jobs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, one_line_error, zoobench
from orchestrator.bench.evalset import EvalSet, evalset_for, evalset_offline
from orchestrator.bench.mounts import Bind
from orchestrator.bench.plan import Job, plan_jobs, predict_run_args
from orchestrator.bench.runner import DataMount
from orchestrator.data.datasets import load_datasets, results_slot
from orchestrator.engines import k8s, slurm_task
from orchestrator.errors import BenchError, ManifestError
from orchestrator.manifests import Profile, load_models
from zoobench_contract.classsets import load_subset
from zoobench_contract.dataset import GENERATED_FILE

MANIFEST = load_datasets()
SERVED = {"m1": {"preprocessing": {"resize_size": 256, "crop_size": 224}}}


def folder(tmp_path: Path, *dirs: str) -> Path:
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    return tmp_path


def test_the_manifest_knows_every_set_and_their_counts():
    sets = MANIFEST.datasets
    assert MANIFEST.default == "imagenet-val"
    assert (sets["imagenet-v2"].images, sets["imagenet-v2"].per_class, sets["imagenet-v2"].layout) == (10000, 10, "integer")
    assert (sets["imagenet-r"].images, sets["imagenet-r"].classes, sets["imagenet-r"].class_subset) == (30000, 200, "imagenet-r")
    assert (sets["imagenet-a"].images, sets["imagenet-a"].class_subset) == (7500, "imagenet-a")
    assert len(sets["imagenet-c"].corruptions) == 15 and len(sets["imagenet-c"].extra_corruptions) == 4
    assert sets["imagenet-r"].clean == "imagenet-r-clean" and sets["imagenet-r-clean"].subset_images


def test_a_bad_datasets_manifest_is_one_line(tmp_path):
    for name in ("datasets.yaml", "models.yaml", "profiles.yaml", "images.yaml"):
        shutil.copy(ROOT / "manifests" / name, tmp_path / name)
    raw = yaml.safe_load((tmp_path / "datasets.yaml").read_text())
    raw["datasets"]["imagenet-r"]["class_subset"] = "imagenet-z"
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match=r"datasets.yaml: field datasets.imagenet-r: .*imagenet-z"):
        load_datasets(tmp_path)
    with pytest.raises(ManifestError, match="unknown dataset; manifests/datasets.yaml defines imagenet-val"):
        MANIFEST.get("imagenet-q")


def test_an_evaluation_set_gives_its_arguments_key_and_place(tmp_path):
    r = evalset_for(MANIFEST, "imagenet-r", folder(tmp_path / "r", "n01443537"))
    assert r.args() == ["--dataset", "imagenet-r", "--classes", "imagenet-r"] and r.slot == "imagenet-r"
    assert r.request()["classes_sha256"] == load_subset("imagenet-r").sha256
    clean = evalset_for(MANIFEST, "imagenet-r-clean", None)
    assert clean.args(with_name=False) == ["--classes", "imagenet-r", "--subset-images"]
    job = Job("pytorch", "t", "m", "imagenet", 8, 60, {}, None, evalset=r)
    args = predict_run_args(job, 8, "cpu", "/data", "imagenet")
    assert args[-4:] == ["--dataset", "imagenet-r", "--classes", "imagenet-r"]
    plain = Job("pytorch", "t", "m", "imagenet", 8, 60, {}, None)
    assert "dataset" not in plain.request("i", "d")  # val keeps the resume key of earlier releases
    assert job.request("i", "d")["dataset"]["name"] == "imagenet-r" and job.request("i", "d") != plain.request("i", "d")


def test_a_generated_set_is_labelled_and_gets_a_place_of_its_own(tmp_path):
    data = folder(tmp_path / "c", "gaussian_noise/1/n01440764")
    official = evalset_for(MANIFEST, "imagenet-c", data)
    assert not official.generated and official.slot == "imagenet-c"
    (data / GENERATED_FILE).write_text("{}")
    generated = evalset_for(MANIFEST, "imagenet-c", data)
    assert generated.generated and generated.slot == "imagenet-c-generated" and "generated" in generated.describe()
    assert results_slot("imagenet-val", False, "imagenet-val") is None
    with pytest.raises(BenchError, match="generated corruption set"):
        evalset_for(MANIFEST, "imagenet-val", data)


@pytest.mark.parametrize("dataset, dirs, needle", [
    ("imagenet-c", ["n01440764"], "folder 'n01440764' is not a corruption of imagenet-c"),
    ("imagenet-v2", ["0", "1", "10"], "integer class folders (0, ...); map them to wnids first"),
    ("imagenet-c", [], "it has no corruption folders"),
])
def test_a_folder_that_is_not_the_set_is_one_line(tmp_path, dataset, dirs, needle):
    data = folder(tmp_path / "d", *dirs)
    data.mkdir(exist_ok=True)
    with pytest.raises(BenchError) as err:
        evalset_for(MANIFEST, dataset, data)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_imagenet_c_is_only_centre_cropped_and_the_set_wins_over_the_model():
    c = evalset_offline(ROOT / "manifests", "imagenet-c")
    jobs = plan_jobs(Profile(models={"img": ["m1"]}), load_models(), {"img": "t"}, lambda i: SERVED, evalset=c)
    assert jobs[0].preprocess == {"crop_fraction": 1.0}
    assert (jobs[0].pixels.resize_size, jobs[0].pixels.crop_size) == (224, 224)
    assert c.preprocess_of({"resize_size": 256, "mode": "tf"}) == {"mode": "tf", "crop_fraction": 1.0}


def test_the_slurm_plan_carries_the_set(tmp_path):
    r = evalset_offline(ROOT / "manifests", "imagenet-r")
    jobs = [Job("pytorch", "t", "resnet18", "random", 8, 60, {}, None, evalset=r)]
    val = str(tmp_path / "val")
    (tmp_path / "weights").mkdir()
    (tmp_path / "results").mkdir()
    plan = slurm_task.Plan.of("run1", tmp_path / "results", tmp_path / "weights",
                              DataMount(val, [Bind(val, val)], {None: "d"}, {None: 1}), jobs, {}, False, None, False,
                              "docker", None)
    plan.save(tmp_path / "plan.json")
    assert slurm_task.Plan.load(tmp_path / "plan.json").job(0) == jobs[0]


def test_kubernetes_jobs_of_a_set_write_to_its_folder():
    r = evalset_offline(ROOT / "manifests", "imagenet-r")
    target = k8s.Target(profile="sample", data_claim="d", results_claim="r", slot=r.slot)
    jobs = [Job("pytorch", "t", "resnet18", "random", 8, 60, {}, None, evalset=r)]
    script = k8s.pod_script(jobs, target)
    assert "RESULTS=/results/imagenet-r\n" in script and "--classes imagenet-r" in script
    rendered = k8s.render(jobs, target)
    assert rendered["pytorch"]["metadata"]["name"] == "zoobench-sample-imagenet-r-pytorch"


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "imagenet-q"], "--dataset 'imagenet-q': unknown dataset"),
    (["--dataset", "imagenet-r"], "--dataset imagenet-r needs --data DIR"),
    (["--dataset", "imagenet-c"], "--dataset imagenet-c needs --data DIR"),
    (["--data", "imagenet-r=/tmp"], "this bench does not run imagenet-r"),
])
def test_bad_dataset_options_are_one_line_before_anything_runs(args, needle, tmp_path):
    proc = zoobench("run", "--profile", "sample", "--results", str(tmp_path / "res"), *args)
    one_line_error(proc, needle)
    assert not (tmp_path / "res").exists()


def test_a_profile_of_several_sets_needs_each_folder(tmp_path):
    proc = zoobench("run", "--profile", "robustness", "--results", str(tmp_path / "res"), "--data", str(tmp_path))
    one_line_error(proc, "give --data NAME=DIR for each set")
    proc = zoobench("run", "--profile", "robustness", "--results", str(tmp_path / "res"),
                    "--data", f"imagenet-val={tmp_path}")
    one_line_error(proc, "--data imagenet-v2=DIR is missing")
