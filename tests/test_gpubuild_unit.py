"""GPU builds without a GPU: the GpuBuild record, images.yaml's gpu: declarations, the GPU_ARCHS build
argument and its place in the tag's hash, the shared wheelhouse, and MXNet's stand-in libcuda.so.1."""
from __future__ import annotations

import copy
import ctypes
import platform
import re
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.images import build as images
from orchestrator.images import manifest as image_manifest
from zoobench_contract.gpubuild import ARCHS_ENV, GpuBuild, capability

from test_images_unit import copy_repo, spec, tag

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "runners" / "mxnet") not in sys.path:
    sys.path.insert(0, str(ROOT / "runners" / "mxnet"))
from zoobench_mxnet import cudastub  # noqa: E402 - stdlib only (no mxnet import)

MANIFEST = ROOT / "manifests" / "images.yaml"


@pytest.fixture
def repo(tmp_path) -> Path:
    return copy_repo(tmp_path / "repo")


# ---------------------------------------------------------------- GpuBuild


@pytest.mark.parametrize("arch, expected", [("sm_86", (8, 6)), ("compute_90", (9, 0)), ("sm_100", (10, 0)),
                                            ("sm_90a", (9, 0)), ("sm_120", (12, 0)), ("compute_75", (7, 5))])
def test_capability(arch, expected):
    assert capability(arch) == expected


@pytest.mark.parametrize("bad", ["sm80", "8.6", "compute", "gfx90a", ""])
def test_capability_refuses_what_is_not_an_architecture(bad):
    with pytest.raises(ValueError, match="sm_XY"):
        capability(bad)


def test_from_arch_list_splits_kernels_from_ptx_and_sorts_by_capability():
    build = GpuBuild.from_arch_list("12.5.1", "9", ["compute_90", "sm_89", "sm_100", "sm_60", " ", "sm_60"])
    assert build.archs == ("sm_60", "sm_89", "sm_100") and build.ptx == ("compute_90",)
    assert build.to_dict() == {"cuda": "12.5.1", "cudnn": "9", "archs": ["sm_60", "sm_89", "sm_100"],
                               "ptx": ["compute_90"], "source": "framework"}


def test_from_env_reads_what_the_image_was_built_with(monkeypatch):
    monkeypatch.setenv(ARCHS_ENV, "sm_86 sm_50 sm_70")
    build = GpuBuild.from_env("11.2")
    assert build == GpuBuild("11.2", None, ("sm_50", "sm_70", "sm_86"), (), "manifest")
    monkeypatch.delenv(ARCHS_ENV)
    assert GpuBuild.from_env("11.2").archs == ()


def test_a_cpu_build_has_no_cuda_and_no_architectures():
    assert GpuBuild(None).to_dict() == {"cuda": None, "cudnn": None, "archs": [], "ptx": [], "source": "framework"}


# ---------------------------------------------------------------- images.yaml gpu:


def test_every_cuda_variant_builds_offline_and_declares_its_gpu_build():
    specs = image_manifest.load_manifest(MANIFEST)
    assert {n for n, s in specs.items() if "cuda" not in s.variants} == {"openvino"}  # Intel GPUs only
    for name, s in specs.items():
        if name == "openvino":
            continue
        cuda, cpu = s.variants["cuda"], s.variants["cpu"]
        assert cuda.base_image == "offline" and cuda.python == cpu.python == "3.11", name
        assert cpu.gpu is None, name
        assert cuda.gpu is not None and re.fullmatch(r"\d+\.\d+", cuda.gpu.cuda) and cuda.gpu.archs, name
        assert cuda.gpu.source == "manifest"


def test_the_declarations_are_what_the_frameworks_report():
    """The numbers read from the locked wheels (see the comments in images.yaml)."""
    gpu = {n: s.variants["cuda"].gpu for n, s in image_manifest.load_manifest(MANIFEST).items() if "cuda" in s.variants}
    assert (gpu["pytorch"].cuda, gpu["pytorch"].archs, gpu["pytorch"].ptx) == (
        "13.0", ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"), ())
    assert (gpu["keras"].cuda, gpu["keras"].archs, gpu["keras"].ptx) == (
        "12.5", ("sm_60", "sm_70", "sm_80", "sm_89"), ("compute_90",))
    assert (gpu["mxnet"].cuda, gpu["mxnet"].archs, gpu["mxnet"].ptx) == (
        "11.2", ("sm_50", "sm_60", "sm_70", "sm_80", "sm_86"), ())


GOOD = {"framework": "pytorch", "dockerfile": "images/Dockerfile", "inputs": ["runners/pytorch"],
        "variants": {"cuda": {"lock": "images/pytorch/requirements.lock", "base_image": "offline",
                              "gpu": {"cuda": "13.0", "archs": ["sm_80", "sm_75"], "ptx": ["compute_90"]}}}}


def gpu_doc(key: str, value) -> dict:
    image = copy.deepcopy(GOOD)
    if value is KeyError:
        del image["variants"]["cuda"]["gpu"][key]
    else:
        image["variants"]["cuda"]["gpu"][key] = value
    return {"images": {"pytorch": image}}


@pytest.mark.parametrize("key, value, expected", [
    ("archs", ["sm80"], ["variants.cuda.gpu.archs", "'sm80' is not an architecture", "sm_80"]),
    ("archs", ["compute_90"], ["variants.cuda.gpu.archs", "'compute_90' is not an architecture"]),
    ("ptx", ["sm_90"], ["variants.cuda.gpu.ptx", "'sm_90' is not an architecture", "compute_90"]),
    ("cuda", "13", ["variants.cuda.gpu.cuda", "pattern"]),
    ("cuda", 13.0, ["variants.cuda.gpu.cuda", "valid string"]),
    ("archs", KeyError, ["variants.cuda.gpu.archs", "Field required"]),
    ("colour", "red", ["variants.cuda.gpu.colour", "Extra inputs are not permitted"]),
])
def test_a_bad_gpu_declaration_is_one_line_naming_the_field(tmp_path, key, value, expected):
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(gpu_doc(key, value)))
    with pytest.raises(image_manifest.ImageManifestError) as err:
        image_manifest.load_manifest(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    for part in expected:
        assert part in message, message


def test_a_good_declaration_is_sorted_and_optional_ptx(tmp_path):
    path = tmp_path / "images.yaml"
    doc = gpu_doc("ptx", KeyError)
    path.write_text(yaml.safe_dump(doc))
    gpu = image_manifest.load_manifest(path)["pytorch"].variants["cuda"].gpu
    assert gpu == GpuBuild("13.0", None, ("sm_75", "sm_80"), (), "manifest")


# ---------------------------------------------------------------- GPU_ARCHS and the tag


def test_gpu_archs_is_a_build_arg_of_cuda_variants_only(repo):
    s = spec(repo)
    assert images.build_args(s, "cuda", repo)["GPU_ARCHS"] == "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"
    assert "GPU_ARCHS" not in images.build_args(s, "cpu", repo)
    keras = spec(ROOT, "keras")
    assert images.build_args(keras, "cuda", ROOT)["GPU_ARCHS"] == "sm_60 sm_70 sm_80 sm_89 compute_90"


def test_gpu_archs_is_reserved(tmp_path):
    doc = copy.deepcopy(GOOD)
    doc["variants"]["cuda"]["build_args"] = {"GPU_ARCHS": "sm_90"}
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump({"images": {"pytorch": doc}}))
    with pytest.raises(image_manifest.ImageManifestError, match="GPU_ARCHS is set by zoobench"):
        image_manifest.load_manifest(path)


def test_the_dockerfile_bakes_gpu_archs_into_the_image():
    text = (ROOT / "images/Dockerfile").read_text()
    assert re.search(r"^ARG GPU_ARCHS=$", text, re.M)
    assert re.search(rf"^\s+{ARCHS_ENV}=\$GPU_ARCHS\b", text, re.M)
    assert "/etc/ld.so.conf.d/zoobench-nvidia.conf" in text and "site-packages/nvidia/*/lib" in text
    assert "ldconfig" in text


@pytest.mark.parametrize("key, value", [("archs", ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100"]),
                                        ("ptx", ["compute_120"]), ("cuda", "13.1")])
def test_a_changed_gpu_declaration_gives_a_new_cuda_tag_only(repo, key, value):
    before = {v: tag(repo, v) for v in ("cpu", "cuda")}
    path = repo / "manifests/images.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["images"]["pytorch"]["variants"]["cuda"]["gpu"][key] = value
    path.write_text(yaml.safe_dump(doc))
    assert tag(repo, "cuda") != before["cuda"]
    assert tag(repo, "cpu") == before["cpu"]


def test_variants_with_the_same_lock_share_a_wheelhouse():
    specs = image_manifest.load_manifest(MANIFEST)
    assert images.wheelhouse_variant(specs["pytorch"], "cuda") == "cpu"  # same lock, same Python
    assert images.wheelhouse_variant(specs["pytorch"], "cpu") == "cpu"
    assert images.wheelhouse_variant(specs["keras"], "cuda") == "cuda"
    assert images.wheelhouse_variant(specs["mxnet"], "cuda") == "cuda"


# ---------------------------------------------------------------- MXNet's stand-in libcuda.so.1


def test_mxnet_cuda_lock_brings_every_cuda_library_libmxnet_links():
    """libmxnet.so (mxnet-cu112) NEEDS these sonames (readelf -d); the nvidia-*-cu11 wheels give them."""
    lock = (ROOT / "images/mxnet/requirements-cuda.lock").read_text()
    for wheel in ("nvidia-cuda-runtime-cu11", "nvidia-cublas-cu11", "nvidia-cufft-cu11", "nvidia-curand-cu11",
                  "nvidia-cusolver-cu11", "nvidia-cuda-nvrtc-cu11", "nvidia-nvtx-cu11", "nvidia-nccl-cu11"):
        assert re.search(rf"^{wheel}==[\d.]+ ", lock, re.M), wheel
    assert re.search(r"^nvidia-cudnn-cu11==8\.[\d.]+ ", lock, re.M)  # libcudnn.so.8


def test_cuda_of_distribution(monkeypatch):
    import importlib.metadata

    for dists, expected in [({"mxnet": ["mxnet-cu112"]}, "11.2"), ({"mxnet": ["mxnet_cu102"]}, "10.2"),
                            ({"mxnet": ["mxnet"]}, None), ({}, None)]:
        monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda d=dists: d)
        assert cudastub.cuda_of_distribution() == expected


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64", reason="an x86-64 ELF")
def test_the_stub_is_a_shared_object_the_loader_accepts(tmp_path):
    """Loaded for real (under another soname, so nothing in this process mistakes it for a driver)."""
    path = tmp_path / "libzoobenchstub.so.1"
    path.write_bytes(cudastub.stub_elf(soname="libzoobenchstub.so.1"))
    lib = ctypes.CDLL(str(path))  # ctypes loads with RTLD_NOW, as mxnet loads libmxnet.so
    for name in cudastub.SYMBOLS:
        assert getattr(lib, name)() == cudastub.CUDA_ERROR_NO_DEVICE, name
    assert b"libzoobenchstub.so.1\0" in path.read_bytes()


def test_the_stub_covers_what_libmxnet_references():
    expected = {"cuDeviceGet", "cuDevicePrimaryCtxRetain", "cuGetErrorString", "cuGraphKernelNodeGetParams",
                "cuGraphNodeGetType", "cuLaunchKernel", "cuModuleGetFunction", "cuModuleLoadData",
                "cuModuleLoadDataEx", "cuModuleUnload"}  # readelf --dyn-syms libmxnet.so: UND cu[A-Z]*
    assert expected <= set(cudastub.SYMBOLS)
