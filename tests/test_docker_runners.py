"""Real containers: both framework images answer the same predict CLI with the same files.

These build the images (cached by content hash) and run them with `docker run`, as a user would.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoobench_contract.imagenet import wnid_to_index
from zoobench_contract.outputs import read_predictions

pytestmark = pytest.mark.docker
FRAMEWORKS = ("pytorch", "keras")
# A photo may have several fair ImageNet labels; top-1 must be one of them.
FAIR = {
    "n02123045": {"n02123045", "n02123159", "n02124075"},  # tabby / tiger cat / Egyptian cat
    "n02123159": {"n02123045", "n02123159", "n02124075"},
    "n03773504": {"n03773504", "n04008634"},  # missile / projectile
    "n03785016": {"n03785016", "n03791053"},  # moped / motor scooter
}
RANDOM_ARCHS = {"pytorch": ["resnet18", "mobilenet_v3_small", "squeezenet1_1"],
                "keras": ["mobilenetv2", "efficientnetb0", "densenet121"]}


def docker_run(tag: str, *args: str, data: Path | None = None, out: Path | None = None, timeout: int = 900):
    cmd = ["docker", "run", "--rm", "--network", "none"]
    if data is not None:
        cmd += ["-v", f"{data}:/data:ro"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o777)  # the image runs as its non-root user
        cmd += ["-v", f"{out}:/out"]
    return subprocess.run(cmd + [tag, *args], capture_output=True, text=True, timeout=timeout)


def predict_lite0(tag: str, data: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    proc = docker_run(tag, "run", "--model", "efficientnet_lite0", "--data", "/data", "--out", "/out", *extra,
                      data=data, out=out)
    assert proc.returncode == 0, proc.stderr
    return read_predictions(out / "predictions.npz")


@pytest.fixture(scope="module")
def lite0(image_tags, sample_dir, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    base = tmp_path_factory.mktemp("lite0")
    return {fw: predict_lite0(image_tags[fw], sample_dir, base / fw) for fw in FRAMEWORKS}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lite0_real_weights_get_photos_right(lite0, framework):
    pred = lite0[framework]
    wnids = sorted(wnid_to_index(), key=wnid_to_index().get)
    assert len(pred["paths"]) >= 6
    for path, top1 in zip(pred["paths"], pred["topk_indices"][:, 0]):
        truth = str(path).split("/")[0]
        assert wnids[top1] in FAIR.get(truth, {truth}), f"{framework}: {path} predicted {wnids[top1]}"


def test_frameworks_agree(lite0):
    pt, kr = lite0["pytorch"], lite0["keras"]
    np.testing.assert_array_equal(pt["paths"], kr["paths"])
    np.testing.assert_array_equal(pt["topk_indices"][:, 0], kr["topk_indices"][:, 0])
    np.testing.assert_array_equal(pt["topk_indices"], kr["topk_indices"])
    np.testing.assert_allclose(pt["topk_scores"], kr["topk_scores"], atol=1e-3)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batch_one_equals_batched(image_tags, sample_dir, lite0, tmp_path, framework):
    single = predict_lite0(image_tags[framework], sample_dir, tmp_path / "b1", "--batch-size", "1")
    batched = lite0[framework]
    np.testing.assert_array_equal(single["topk_indices"], batched["topk_indices"])
    np.testing.assert_allclose(single["topk_scores"], batched["topk_scores"], atol=1e-4)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_list_and_info(image_tags, framework):
    proc = docker_run(image_tags[framework], "list")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    names = {m["name"] for m in listing}
    assert len(names) >= (80 if framework == "pytorch" else 30), sorted(names)
    assert {"efficientnet_lite0", *RANDOM_ARCHS[framework]} <= names
    for m in listing:
        p = m["preprocessing"]
        assert p["crop_size"] <= p["resize_size"] and p["interpolation"] and p["mode"] and m["weights"]
    info = json.loads(docker_run(image_tags[framework], "info").stdout)
    assert info["framework"] == framework and info["python"] and info["framework_version"]
    assert info["image_tag"] == image_tags[framework]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_other_architectures_with_random_weights(image_tags, sample_dir, tmp_path, framework):
    for model in RANDOM_ARCHS[framework]:
        out = tmp_path / model
        proc = docker_run(image_tags[framework], "run", "--model", model, "--data", "/data", "--out", "/out",
                          "--weights", "random", "--limit", "3", "--batch-size", "2", data=sample_dir, out=out)
        assert proc.returncode == 0, f"{model}: {proc.stderr}"
        assert "RANDOM WEIGHTS" in proc.stdout
        pred = read_predictions(out / "predictions.npz")
        run = json.loads((out / "run.json").read_text())
        assert pred["topk_indices"].shape == (3, 5) and np.isfinite(pred["topk_scores"]).all()
        assert run["weights"]["kind"] == "random" and run["model"] == model and run["n_images"] == 3


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory, sample_dir) -> Path:
    """Converted, not rejected: CMYK JPEG, greyscale PNG, 16-bit PNG (made from a real photo)."""
    root = tmp_path_factory.mktemp("odd")
    photo = Image.open(next(sample_dir.glob("*/*"))).convert("RGB")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    grey = photo.convert("L")
    grey.save(root / "grey.png")
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(root / "grey16.png")
    root.chmod(0o755)
    return root


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_odd_images_are_converted(image_tags, odd_images, tmp_path, framework):
    pred = predict_lite0(image_tags[framework], odd_images, tmp_path / "o", "--save-logits")
    assert list(pred["paths"]) == ["cmyk.jpg", "grey.png", "grey16.png"]
    np.testing.assert_array_equal(pred["topk_indices"][1], pred["topk_indices"][2])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_input_gives_one_line(image_tags, sample_dir, tmp_path, framework):
    tag = image_tags[framework]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(sample_dir, corrupt)
    victim = sorted(corrupt.glob("*/*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    empty = tmp_path / "empty"
    (empty / "n01440764").mkdir(parents=True)
    cases = [
        (["--model", "no_such_net", "--data", "/data"], sample_dir, "unknown model 'no_such_net'"),
        (["--model", "efficientnet_lite0", "--data", "/data/missing"], sample_dir, "does not exist"),
        (["--model", "efficientnet_lite0", "--data", "/data"], empty, "no images found"),
        (["--model", "efficientnet_lite0", "--data", "/data"], corrupt, victim.name),
    ]
    for args, data, needle in cases:
        out = tmp_path / f"out-{len(needle)}"
        proc = docker_run(tag, "run", *args, "--out", "/out", data=data, out=out)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (args, err)
        assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err, err
        assert not (out / "predictions.npz").exists() and not (out / "run.json").exists()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_image_runs_as_non_root_without_network(image_tags, framework):
    proc = subprocess.run(["docker", "image", "inspect", image_tags[framework]], capture_output=True, text=True)
    config = json.loads(proc.stdout)[0]["Config"]
    assert config["User"] not in ("", "root", "0")
    assert config["Entrypoint"] == ["predict"]
    assert any(e.startswith(("TORCH_HOME=/weights", "KERAS_HOME=/weights")) for e in config["Env"]), config["Env"]
