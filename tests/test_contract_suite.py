"""The contract suite: every image in manifests/images.yaml answers the same predict CLI the same way.

Parametrised over the manifest, so an image added there is checked without a new test: list, info,
run (real Lite0 weights, random-weight architectures of the ``smoke`` profile), fetch, exit codes
2 (bad input) and 4 (weights unavailable), batch 1 equals batch N, Lite0 agreeing with the other
images, odd image formats, one-line errors, a locked-down non-root image. The images are built (or
reused by content hash) and run with ``docker run``, as a user would. A runtime image (images.yaml
``reads: onnx``) gets PyTorch's models converted by ``zoobench convert`` (conftest's ``converted_cache``)
mounted read-only at /converted/pytorch, and serves them as ``pytorch.MODEL``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, converted_mount
from orchestrator.images import manifest as image_manifest
from zoobench_contract.imagenet import wnid_to_index
from zoobench_contract.outputs import read_predictions

pytestmark = pytest.mark.docker
IMAGES = list(yaml.safe_load((ROOT / "manifests" / "images.yaml").read_text())["images"])
SMOKE = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"]["smoke"]["models"]
REFERENCE = IMAGES[0]  # Lite0 of every other image is compared with this one's
SPECS = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
RUNTIMES = {name for name, spec in SPECS.items() if spec.reads}  # they serve converted models
FRAMEWORK = {name: spec.framework for name, spec in SPECS.items()}  # keras-jax, keras-torch: keras
LITE0 = {name: "pytorch.efficientnet_lite0" if name in RUNTIMES else "efficientnet_lite0" for name in IMAGES}
MOUNTS: dict[str, list[str]] = {}  # a runtime image's tag -> the docker arguments that mount its conversions
SERVES = {"mxnet": set(), "onnxruntime": set(), "openvino": {"bf16"}}  # precisions beside fp32 (others: tf32, bf16)
# A photo may have several fair ImageNet labels; top-1 must be one of them.
FAIR = {
    "n02123045": {"n02123045", "n02123159", "n02124075"},  # tabby / tiger cat / Egyptian cat
    "n02123159": {"n02123045", "n02123159", "n02124075"},
    "n03773504": {"n03773504", "n04008634"},  # missile / projectile
    "n03785016": {"n03785016", "n03791053"},  # moped / motor scooter
}


def docker_run(tag: str, *args: str, data: Path | None = None, out: Path | None = None, timeout: int = 900,
               extra: tuple[str, ...] = ()):
    """``docker run --rm --network none`` of ``tag`` with /data (read-only) and /out, a runtime image's
    conversions (:data:`MOUNTS`) and ``extra`` docker arguments."""
    cmd = ["docker", "run", "--rm", "--network", "none", *MOUNTS.get(tag, []), *extra]
    if data is not None:
        cmd += ["-v", f"{data}:/data:ro"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o777)  # the image runs as its non-root user
        cmd += ["-v", f"{out}:/out"]
    return subprocess.run(cmd + [tag, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, code: int, needle: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and needle in errors[0], err


def lite0_of(tag: str) -> str:
    """Lite0's name in the image of ``tag``: a runtime image serves PyTorch's, converted."""
    return "pytorch.efficientnet_lite0" if tag in MOUNTS else "efficientnet_lite0"


def mount_conversions(image_tags: dict[str, str], converted_cache: Path) -> None:
    """From now on each runtime image sees the tests' conversions of PyTorch's models, read-only."""
    host, target = converted_mount(converted_cache, image_tags)
    for image in RUNTIMES:
        MOUNTS[image_tags[image]] = ["-v", f"{host}:{target}:ro"]


@pytest.fixture(scope="module", autouse=True)
def runtime_mounts(image_tags, converted_cache):
    """Each runtime image of this module's tests sees the tests' conversions."""
    mount_conversions(image_tags, converted_cache)
    yield
    MOUNTS.clear()


def predict_lite0(tag: str, data: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    proc = docker_run(tag, "run", "--model", lite0_of(tag), "--data", "/data", "--out", "/out", *extra,
                      data=data, out=out)
    assert proc.returncode == 0, proc.stderr
    return read_predictions(out / "predictions.npz")


@pytest.fixture(scope="module")
def listings(image_tags) -> dict[str, list[dict]]:
    out = {}
    for image in IMAGES:
        proc = docker_run(image_tags[image], "list")
        assert proc.returncode == 0, proc.stderr
        out[image] = json.loads(proc.stdout)
    return out


@pytest.fixture(scope="module")
def lite0(image_tags, sample_dir, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    base = tmp_path_factory.mktemp("lite0")
    return {image: predict_lite0(image_tags[image], sample_dir, base / image) for image in IMAGES}


def test_every_image_is_in_the_smoke_profile():
    """The suite's random-weight architectures come from the smoke profile: each image needs some."""
    assert set(IMAGES) <= set(SMOKE), f"add {sorted(set(IMAGES) - set(SMOKE))} to profiles.yaml smoke"


@pytest.mark.parametrize("image", IMAGES)
def test_list_and_info(image_tags, listings, image):
    listing = listings[image]
    names = [m["name"] for m in listing]
    assert len(names) == len(set(names)) >= (1 if image in RUNTIMES else 30)
    assert {LITE0[image], *SMOKE[image]} <= set(names)
    framework = listing[0]["framework"]
    for m in listing:
        p = m["preprocessing"]
        assert m["framework"] == framework and m["num_classes"] == 1000 and m["weights"]
        assert 0 < p["crop_size"] <= p["resize_size"] and p["interpolation"] and p["mode"]
        assert isinstance(m["weights_bundled"], bool)
    for m in listing:  # a weights variant trained with other transforms lists them
        for variant, prep in m.get("weights_variants", {}).items():
            assert 0 < prep["crop_size"] <= prep["resize_size"], (m["name"], variant)
    if image == "pytorch":  # the published table's ResNet-50 (V1) was evaluated at resize 256, V2 at 232
        resnet50 = next(m for m in listing if m["name"] == "resnet50")
        assert resnet50["weights_variants"]["IMAGENET1K_V1"]["resize_size"] == 256
        assert resnet50["preprocessing"]["resize_size"] == 232
    info = json.loads(docker_run(image_tags[image], "info").stdout)
    assert info["framework"] == framework and info["python"] and info["framework_version"] and info["numpy"]
    assert info["image_tag"] == image_tags[image]


@pytest.mark.parametrize("image", IMAGES)
def test_lite0_real_weights_get_photos_right(lite0, image):
    pred = lite0[image]
    wnids = sorted(wnid_to_index(), key=wnid_to_index().get)
    assert len(pred["paths"]) >= 6
    for path, top1 in zip(pred["paths"], pred["topk_indices"][:, 0]):
        truth = str(path).split("/")[0]
        assert wnids[top1] in FAIR.get(truth, {truth}), f"{image}: {path} predicted {wnids[top1]}"


@pytest.mark.parametrize("image", [i for i in IMAGES if i != REFERENCE])
def test_lite0_agrees_with_the_reference_image(lite0, image):
    """Same weights, same pixels: equal top-1 and top-5 classes on every photo, scores within 1e-3."""
    ref, other = lite0[REFERENCE], lite0[image]
    np.testing.assert_array_equal(ref["paths"], other["paths"])
    np.testing.assert_array_equal(ref["topk_indices"][:, 0], other["topk_indices"][:, 0])
    np.testing.assert_array_equal(ref["topk_indices"], other["topk_indices"])
    np.testing.assert_allclose(ref["topk_scores"], other["topk_scores"], atol=1e-3)


@pytest.mark.parametrize("image", IMAGES)
def test_batch_one_equals_batched(image_tags, sample_dir, lite0, tmp_path, image):
    single = predict_lite0(image_tags[image], sample_dir, tmp_path / "b1", "--batch-size", "1")
    batched = lite0[image]
    np.testing.assert_array_equal(single["topk_indices"], batched["topk_indices"])
    np.testing.assert_allclose(single["topk_scores"], batched["topk_scores"], atol=1e-4)


@pytest.mark.parametrize("image", IMAGES)
def test_a_class_subset_restricts_the_logits_in_the_container(image_tags, sample_dir, lite0, tmp_path, image):
    """ImageNet-R's 200 classes: every image ships the shipped lists, the top-k stays inside them, and
    where the full top-1 already lies in the subset the restricted top-1 is the same class."""
    from zoobench_contract.classsets import load_subset

    subset = load_subset("imagenet-r")
    sub = predict_lite0(image_tags[image], sample_dir, tmp_path / "r", "--classes", "imagenet-r")
    full = lite0[image]
    assert set(sub["topk_indices"].ravel()) <= set(subset.indices)
    inside = np.isin(full["topk_indices"][:, 0], subset.indices)
    assert inside.any()
    np.testing.assert_array_equal(sub["topk_indices"][inside, 0], full["topk_indices"][inside, 0])
    assert (sub["topk_scores"][inside, 0] >= full["topk_scores"][inside, 0] - 1e-6).all()  # renormalised over 200


@pytest.mark.parametrize("image", IMAGES)
def test_uint8_device_path_equals_the_float_host_path(image_tags, sample_dir, tmp_path, image):
    """uint8 crops normalised by the backend (the default) vs float32 normalised by numpy (the path
    of the published runs): real Lite0 weights, float32 logits, max |dlogit| <= 1e-4."""
    logits, runs = {}, {}
    for where in ("device", "host"):
        out = tmp_path / where
        logits[where] = predict_lite0(image_tags[image], sample_dir, out, "--normalise", where, "--save-logits",
                                      "--logits-dtype", "float32")["logits"]
        runs[where] = json.loads((out / "run.json").read_text())
    assert logits["device"].dtype == np.float32 and logits["device"].shape == (len(logits["host"]), 1000)
    assert runs["device"]["normalise"] == ("device" if image not in RUNTIMES else runs["device"]["normalise"])
    assert runs["host"]["normalise"] == "host"
    assert np.abs(logits["device"] - logits["host"]).max() <= 1e-4


@pytest.mark.parametrize("image", IMAGES)
def test_pixel_cache_gives_byte_identical_predictions(image_tags, sample_dir, lite0, tmp_path, image):
    """`predict cache` in the image, then `predict run --pixels` (cache mounted read-only)."""
    tag, cache = image_tags[image], tmp_path / "cache"
    spec = json.loads(docker_run(tag, "list").stdout)
    prep = next(m for m in spec if m["name"] == LITE0[image])["preprocessing"]
    built = docker_run(tag, "cache", "--data", "/data", "--out", "/out", "--resize-size", str(prep["resize_size"]),
                       "--crop-size", str(prep["crop_size"]), "--interpolation", prep["interpolation"],
                       data=sample_dir, out=cache)
    assert built.returncode == 0, built.stderr
    out = tmp_path / "cached"
    out.mkdir()
    out.chmod(0o777)
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", *MOUNTS.get(tag, []), "-v",
                           f"{sample_dir}:/data:ro", "-v", f"{cache}:/pixels:ro", "-v", f"{out}:/out", tag, "run",
                           "--model", LITE0[image], "--data", "/data", "--out", "/out", "--pixels", "/pixels"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    cached = read_predictions(out / "predictions.npz")
    assert cached.keys() == lite0[image].keys()
    for key, value in lite0[image].items():
        np.testing.assert_array_equal(cached[key], value)
    assert json.loads((out / "run.json").read_text())["pixel_cache"]["folder"] == "/pixels"


@pytest.mark.parametrize("image", IMAGES)
def test_precisions(image_tags, sample_dir, lite0, tmp_path, image):
    """tf32 and bf16 run where the backend serves them (recorded, top-1 kept on CPU), else one line."""
    tag = image_tags[image]
    for precision in ("tf32", "bf16"):
        out = tmp_path / precision
        proc = docker_run(tag, "run", "--model", LITE0[image], "--data", "/data", "--out", "/out",
                          "--precision", precision, data=sample_dir, out=out)
        if precision not in SERVES.get(image, {"tf32", "bf16"}):
            assert_one_line_error(proc, 2, precision)
            continue
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "run.json").read_text())["precision"] == precision
        pred = read_predictions(out / "predictions.npz")
        agree = (pred["topk_indices"][:, 0] == lite0[image]["topk_indices"][:, 0]).mean()
        assert agree >= 5 / 6, (precision, agree)


@pytest.mark.parametrize("image", IMAGES)
def test_other_architectures_with_random_weights(image_tags, sample_dir, tmp_path, image):
    for model in SMOKE[image]:
        out = tmp_path / model
        proc = docker_run(image_tags[image], "run", "--model", model, "--data", "/data", "--out", "/out",
                          "--weights", "random", "--limit", "3", "--batch-size", "2", data=sample_dir, out=out)
        assert proc.returncode == 0, f"{model}: {proc.stderr}"
        assert "RANDOM WEIGHTS" in proc.stdout
        pred = read_predictions(out / "predictions.npz")
        run = json.loads((out / "run.json").read_text())
        assert pred["topk_indices"].shape == (3, 5) and np.isfinite(pred["topk_scores"]).all()
        assert run["weights"]["kind"] == "random" and run["model"] == model and run["n_images"] == 3
        assert run["framework"] == FRAMEWORK[image] and run["status"] == "ok"


@pytest.mark.parametrize("image", IMAGES)
def test_fetch_and_missing_weights(image_tags, listings, sample_dir, tmp_path, image):
    """fetch: bundled weights need nothing (exit 0); without network a download is exit 4, one line.
    run: ImageNet weights that are not in the cache are exit 4, one line, nothing written."""
    tag = image_tags[image]
    bundled = docker_run(tag, "fetch", "--model", LITE0[image])
    assert bundled.returncode == 0 and json.loads(bundled.stdout)["status"] == "bundled", bundled.stderr
    if image in RUNTIMES:  # a converted model ships its weights: a choice never converted is exit 4, one line
        out = tmp_path / "missing"
        proc = docker_run(tag, "run", "--model", SMOKE[image][0], "--data", "/data", "--out", "/out", data=sample_dir,
                          out=out)
        assert_one_line_error(proc, 4, "zoobench convert")
        assert not list(out.iterdir())
        return
    needs = next(m["name"] for m in listings[image] if not m["weights_bundled"] and m["name"] in SMOKE[image])
    assert_one_line_error(docker_run(tag, "fetch", "--model", needs, timeout=300), 4, needs)
    out = tmp_path / "missing"
    proc = docker_run(tag, "run", "--model", needs, "--data", "/data", "--out", "/out", data=sample_dir, out=out)
    assert_one_line_error(proc, 4, "weights fetch")
    assert not list(out.iterdir())
    # `weights_files` names the very file `run` looks for (the orchestrator checks it on the host):
    # with a file there, the weights are no longer "not in the cache"
    spec = next(m for m in listings[image] if m["name"] == needs)
    rel = spec["weights_files"]["imagenet"]
    assert not rel.startswith("/") and ".." not in rel, rel
    weights = tmp_path / "weights"
    (weights / rel).parent.mkdir(parents=True)
    (weights / rel).write_bytes(b"not the real weights")
    subprocess.run(["chmod", "-R", "a+rX", str(weights)], check=True)
    found = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{sample_dir}:/data:ro",
                            "-v", f"{weights}:/weights:ro", tag, "run", "--model", needs, "--data", "/data",
                            "--out", "/tmp/o"], capture_output=True, text=True, timeout=600)
    assert found.returncode != 0 and "not in the cache" not in found.stderr, found.stderr
    assert all(m["weights_files"] == {} for m in listings[image] if m["weights_bundled"])


@pytest.mark.parametrize("image", [i for i in IMAGES if i not in RUNTIMES])
def test_state_arrays_cover_parameters_and_batch_norm_statistics(image_tags, image):
    """What the `parameters` digest of run.json covers: every parameter and every batch-norm statistic.
    (A runtime's converted graph has batch norm folded into the convolutions: tests/test_runtime_images.py.)"""
    script = ("import json; from zoobench_contract.cli import load_backend, find_model; b = load_backend(); "
              "s = find_model(b, 'efficientnet_lite0'); net = b.load(s, 'random', 'cpu'); "
              "import numpy as np; from zoobench_contract.cli import Predictor; "
              "Predictor(b, net, s.preprocessing, 'device')(np.zeros((1, 224, 224, 3), np.uint8)); "
              "names = [n for n, _ in b.state_arrays(net)]; "
              "print(json.dumps({'n': len(names), 'values': sum(a.size for _, a in b.state_arrays(net)), "
              "'stats': sum(('running' in n or 'moving' in n) for n in names)}))")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image_tags[image],
                           "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 4_000_000 < found["values"] < 4_800_000, found  # Lite0: 4.65 M parameters + BN statistics
    assert found["stats"] >= 2 * 49, found  # running/moving mean and variance of each of its 49 batch norms


def test_keras_weights_files_are_the_names_keras_asks_for(image_tags):
    """The Keras table (zoobench_keras.weights_files) against keras.applications itself."""
    names = ["mobilenetv2", "efficientnetb0", "densenet121", "nasnetmobile", "resnet50v2"]
    script = ("import json; from zoobench_keras.backend import keras_applications; "
              "from zoobench_keras.weights_files import FILES, probe; apps = keras_applications(); "
              f"names = {names!r}; print(json.dumps({{'table': {{n: FILES[n] for n in names}}, "
              "'asked': probe({n: apps[n][1] for n in names}), 'missing': sorted(set(apps) - set(FILES))}))")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
                           image_tags["keras"], "-c", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["table"] == found["asked"] and found["missing"] == [], found


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


@pytest.mark.parametrize("image", IMAGES)
def test_odd_images_are_converted(image_tags, odd_images, tmp_path, image):
    pred = predict_lite0(image_tags[image], odd_images, tmp_path / "o", "--save-logits")
    assert list(pred["paths"]) == ["cmyk.jpg", "grey.png", "grey16.png"]
    np.testing.assert_array_equal(pred["topk_indices"][1], pred["topk_indices"][2])


@pytest.mark.parametrize("image", IMAGES)
def test_bad_input_gives_one_line(image_tags, sample_dir, tmp_path, image):
    tag = image_tags[image]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(sample_dir, corrupt)
    victim = sorted(corrupt.glob("*/*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    empty = tmp_path / "empty"
    (empty / "n01440764").mkdir(parents=True)
    lite0 = ["--model", LITE0[image], "--data", "/data"]
    cases = [
        (["--model", "no_such_net", "--data", "/data"], sample_dir, "unknown model 'no_such_net'"),
        (["--model", LITE0[image], "--data", "/data/missing"], sample_dir, "does not exist"),
        (lite0, empty, "no images found"),
        (lite0, corrupt, victim.name),
        ([*lite0, "--weights", "/data/none.pth"], sample_dir, "no such file"),
        ([*lite0, "--weights", "imagenet:NO_SUCH_VARIANT"], sample_dir, "NO_SUCH_VARIANT"),  # runtimes: exit 4
        ([*lite0, "--preprocess", '{"crop_size": 300, "resize_size": 256}'], sample_dir, "crop_size"),
        ([*lite0, "--device", "tpu"], sample_dir, "--device"),
    ]
    for i, (args, data, needle) in enumerate(cases):
        out = tmp_path / f"out-{i}"
        proc = docker_run(tag, "run", *args, "--out", "/out", data=data, out=out)
        err = proc.stderr.strip()
        assert proc.returncode == (4 if image in RUNTIMES and "NO_SUCH_VARIANT" in needle else 2), (args, err)
        assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err, (args, err)
        assert not (out / "predictions.npz").exists() and not (out / "run.json").exists()


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_as_non_root_without_network(image_tags, image):
    proc = subprocess.run(["docker", "image", "inspect", image_tags[image]], capture_output=True, text=True)
    config = json.loads(proc.stdout)[0]["Config"]
    assert config["User"] not in ("", "root", "0")
    assert config["Entrypoint"] == ["predict"]
    assert {"TORCH_HOME=/weights/torch", "KERAS_HOME=/weights/keras", "MXNET_HOME=/weights/mxnet"} <= set(config["Env"])
    assert config["Labels"]["org.zoobench.framework"] == FRAMEWORK[image]
