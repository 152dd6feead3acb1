"""--precision and --jobs-per-gpu without containers: validation, the lane plan, the resume request."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import one_line_error, zoobench
from orchestrator.errors import BenchError
from orchestrator.bench.plan import Job, lane_plan, plan_jobs
from orchestrator.bench.runner import Bench, DataMount, finished, publish
from orchestrator.manifests import ManifestError, Profile, load_models, load_profiles
from orchestrator.bench.pixelcache import PixelConfig
from zoobench_contract.outputs import write_json, write_predictions

SERVED = {"m1": {"preprocessing": {}}, "m2": {"preprocessing": {}}}


# ---------------------------------------------------------------- lanes

def test_lane_plan():
    assert lane_plan([], 1) == [(None, "cpu")]
    assert lane_plan(["0"], 1) == [("0", "gpu 0")]
    assert lane_plan(["0", "1"], 1) == [("0", "gpu 0"), ("1", "gpu 1")]
    # Two lanes per GPU, spread so that the first two models start on different GPUs.
    assert lane_plan(["0", "1"], 2) == [("0", "gpu 0 #1"), ("1", "gpu 1 #1"), ("0", "gpu 0 #2"), ("1", "gpu 1 #2")]
    assert [g for g, _ in lane_plan(["3"], 3)] == ["3", "3", "3"]
    with pytest.raises(BenchError, match="--jobs-per-gpu needs --gpus"):
        lane_plan([], 2)
    with pytest.raises(BenchError, match="--jobs-per-gpu 0"):
        lane_plan(["0"], 0)


@pytest.mark.parametrize("args, needle", [
    (["run", "--jobs-per-gpu", "2"], "--jobs-per-gpu needs --gpus"),
    (["run", "--jobs-per-gpu", "0"], "--jobs-per-gpu"),
    (["run", "--precision", "fp16"], "--precision 'fp16': use one of fp32|tf32|bf16"),
])
def test_bad_options_are_one_line_before_anything_runs(args, needle, tmp_path):
    one_line_error(zoobench(*args, "--results", str(tmp_path / "r")), needle)
    assert not (tmp_path / "r").exists()  # refused before the results folder was even made


# ---------------------------------------------------------------- precision in profiles and jobs

def test_profile_precision_is_validated(tmp_path):
    assert Profile(models={}).precision_for("pytorch") == "fp32"
    mapped = Profile(models={}, precision={"pytorch": "bf16"})
    assert (mapped.precision_for("pytorch"), mapped.precision_for("mxnet")) == ("bf16", "fp32")
    assert {p.precision_for("pytorch") for p in load_profiles().profiles.values()} == {"fp32"}
    for bad in ("fp16", "{pytorch: int8}"):
        (tmp_path / "profiles.yaml").write_text(f"profiles:\n  x:\n    precision: {bad}\n    models: {{img: [m1]}}\n")
        with pytest.raises(ManifestError) as err:
            load_profiles(tmp_path)
        msg = str(err.value)
        assert "field profiles.x.precision:" in msg and "fp32|tf32|bf16" in msg and "\n" not in msg


def test_precision_reaches_the_jobs_and_the_option_overrides_the_profile():
    plan = lambda profile, **kw: plan_jobs(profile, load_models(), {"img": "t", "mx": "u"},  # noqa: E731
                                           lambda i: SERVED, **kw)
    assert {j.precision for j in plan(Profile(models={"img": ["m1"]}))} == {"fp32"}
    assert {j.precision for j in plan(Profile(models={"img": ["m1", "m2"]}, precision="bf16"))} == {"bf16"}
    mixed = plan(Profile(models={"img": ["m1"], "mx": ["m2"]}, precision={"img": "tf32"}))
    assert [(j.image, j.precision) for j in mixed] == [("img", "tf32"), ("mx", "fp32")]
    assert {j.precision for j in plan(Profile(models={"img": ["m1"]}, precision="bf16"), precision="fp32")} == {"fp32"}


def test_a_run_is_reused_only_at_its_precision_and_whatever_the_pixel_cache(tmp_path):
    fp32 = Job("img", "t", "m", "random", 8, 60, {}, None)
    bf16 = Job("img", "t", "m", "random", 8, 60, {}, None, precision="bf16")
    cached = Job("img", "t", "m", "random", 8, 60, {}, None, pixels=PixelConfig(256, 224, "bilinear"))
    request = fp32.request("sha256:image", "sha256:data")
    assert request["precision"] == "fp32" and bf16.request("sha256:image", "sha256:data")["precision"] == "bf16"
    assert cached.request("sha256:image", "sha256:data") == request  # the cache changes no prediction
    partial, final = tmp_path / "r.partial", tmp_path / "r"
    partial.mkdir()
    write_predictions(partial / "predictions.npz", ["n01440764/a.JPEG"], np.arange(5)[None],
                      np.ones((1, 5), np.float32))
    write_json(partial / "run.json", {"schema_version": 1, "status": "ok", "precision": "fp32"})
    publish(partial, final, request)
    assert finished(final, cached.request("sha256:image", "sha256:data"))
    assert not finished(final, bf16.request("sha256:image", "sha256:data"))


def test_predict_run_arguments_carry_precision_and_pixels():
    bench = object.__new__(Bench)  # _args reads only these; no engine needed
    bench.weights_binds, bench.data = {}, DataMount("/data/val", [], {None: "sha256:d"})
    job = Job("img", "t", "m", "random", 8, 60, {"resize_size": 240}, 3, precision="bf16")
    args = bench._args(job, 4, "0", pixels=True)
    assert args[args.index("--precision") + 1] == "bf16" and args[args.index("--pixels") + 1] == "/pixels"
    assert args[args.index("--device") + 1] == "cuda" and args[args.index("--limit") + 1] == "3"
    plain = bench._args(Job("img", "t", "m", "random", 8, 60, {}, None), 8, None)
    assert "--pixels" not in plain and plain[plain.index("--precision") + 1] == "fp32"
    assert plain[plain.index("--device") + 1] == "cpu"


def test_a_weights_variant_brings_its_own_preprocessing():
    from orchestrator.bench.plan import variant_preprocessing

    listing = {"preprocessing": {"resize_size": 232, "crop_size": 224},
               "weights_variants": {"IMAGENET1K_V1": {"resize_size": 256, "crop_size": 224}}}
    assert variant_preprocessing(listing, "imagenet:IMAGENET1K_V1")["resize_size"] == 256
    assert variant_preprocessing(listing, "imagenet")["resize_size"] == 232
    assert variant_preprocessing(listing, "imagenet:UNKNOWN")["resize_size"] == 232  # the runner refuses it
    assert variant_preprocessing({"preprocessing": {"crop_size": 1}}, "random") == {"crop_size": 1}
