"""The cuda images, checked without a GPU: each cuda variant of manifests/images.yaml lists and
describes its models on the CPU, reports the CUDA build images.yaml declares (`predict info`
gpu_build), has every shared library of its framework resolvable (only the driver, which the NVIDIA
Container Toolkit brings at run time, may be missing) and predicts Lite0 on the sample photos as its
cpu variant does. Built in CI (conftest's cuda_image_tags); skipped with a reason elsewhere when the
images are not built.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import ROOT, converted_mount
from orchestrator.images import manifest as image_manifest
from test_contract_suite import MOUNTS, docker_run, lite0_of, predict_lite0

pytestmark = pytest.mark.docker
SPECS = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
CUDA = [name for name, spec in SPECS.items() if "cuda" in spec.variants]
# Each image's framework or runtime packages under site-packages whose .so files must all resolve.
FRAMEWORK_DIRS = {"pytorch": ["torch", "torchvision"], "keras": ["tensorflow"], "mxnet": ["mxnet"],
                  "keras-jax": ["jaxlib", "jax_plugins", "jax_cuda12_plugin"], "keras-torch": ["torch"], "onnxruntime": ["onnxruntime"]}
DRIVER_LIBS = ("libcuda.so", "libnvidia-")  # the host driver's, mounted at run time: never in an image
# Optional plug-ins a framework loads only when asked: ONNX Runtime's TensorRT provider needs TensorRT's
# libnvinfer, which cannot be installed from PyPI (its wheels are download stubs); the image uses the CUDA provider.
OPTIONAL_LIBS = ("onnxruntime/capi/libonnxruntime_providers_tensorrt.so",)

# The framework's own folders join the search path: it loads its core libraries before its extensions
# (torchvision's *_stable.so need libtorch.so, which `import torch` has loaded), never the CUDA wheels'.
LDD_SCRIPT = r"""
import glob, json, os, subprocess, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
paths = sorted(p for top in sys.argv[1:] for p in glob.glob(f"{site}/{top}/**/*.so*", recursive=True))
own = ":".join(sorted({os.path.dirname(p) for p in paths}))
env = {**os.environ, "LD_LIBRARY_PATH": ":".join(filter(None, [own, os.environ.get("LD_LIBRARY_PATH")]))}
out = {}
for path in paths:
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
    out[path[len(site) + 1:]] = [line.strip() for line in proc.stdout.splitlines() if "not found" in line]
print(json.dumps(out))
"""


@pytest.fixture(scope="module", autouse=True)
def runtime_mounts(image_tags, cuda_image_tags, converted_cache):
    """A cuda runtime image sees the tests' conversions (made in the cpu pytorch image) as its cpu variant does."""
    host, target = converted_mount(converted_cache, image_tags)
    for image, spec in SPECS.items():
        if spec.reads:
            for tag in (image_tags[image], cuda_image_tags.get(image)):
                if tag:
                    MOUNTS[tag] = ["-v", f"{host}:{target}:ro"]
    yield
    MOUNTS.clear()


def test_every_image_has_a_cuda_variant_with_a_gpu_declaration():
    assert set(CUDA) == set(SPECS) - {"openvino"}  # OpenVINO's GPU plugin drives Intel GPUs only
    for name in CUDA:
        assert SPECS[name].variants["cuda"].gpu is not None, f"images.{name}.variants.cuda.gpu missing"


@pytest.mark.parametrize("image", CUDA)
def test_list_and_info_work_on_the_cpu_and_report_the_declared_cuda_build(cuda_image_tags, image):
    tag = cuda_image_tags[image]
    listing = docker_run(tag, "list")
    assert listing.returncode == 0, listing.stderr
    assert lite0_of(tag) in {m["name"] for m in json.loads(listing.stdout)}
    proc = docker_run(tag, "info")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["image_tag"] == tag and info["gpus"] == []
    declared, built = SPECS[image].variants["cuda"].gpu, info["gpu_build"]
    assert built["cuda"] and ".".join(built["cuda"].split(".")[:2]) == declared.cuda, (built, declared)
    assert built["archs"] == list(declared.archs), (built, declared)
    assert built["ptx"] == list(declared.ptx), (built, declared)


@pytest.mark.parametrize("image", CUDA)
def test_every_framework_library_resolves_but_the_driver(cuda_image_tags, image):
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
                           cuda_image_tags[image], "-c", LDD_SCRIPT, *FRAMEWORK_DIRS[image]],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    libraries = json.loads(proc.stdout)
    assert libraries, f"no shared libraries found under {FRAMEWORK_DIRS[image]}"
    unresolved = {path: [line for line in missing if not line.startswith(DRIVER_LIBS)]
                  for path, missing in libraries.items()}
    unresolved = {path: missing for path, missing in unresolved.items() if missing and path not in OPTIONAL_LIBS}
    assert not unresolved, f"{image} (cuda): libraries that do not resolve: {unresolved}"


@pytest.fixture(scope="module")
def cpu_lite0(image_tags, sample_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("lite0-cpu")
    return {image: predict_lite0(image_tags[image], sample_dir, base / image) for image in CUDA}


@pytest.mark.parametrize("image", CUDA)
def test_lite0_on_the_cpu_equals_the_cpu_variant(cuda_image_tags, cpu_lite0, sample_dir, tmp_path, image):
    """Same framework version, same weights, same pixels: the CUDA build computes the same on the CPU."""
    ref = cpu_lite0[image]
    got = predict_lite0(cuda_image_tags[image], sample_dir, tmp_path / "out", "--device", "cpu")
    np.testing.assert_array_equal(ref["paths"], got["paths"])
    np.testing.assert_array_equal(ref["topk_indices"][:, :5], got["topk_indices"][:, :5])
    np.testing.assert_allclose(ref["topk_scores"][:, :5], got["topk_scores"][:, :5], atol=1e-4, rtol=0)
