"""Image manifest, content-hash tags and build plumbing, without building anything."""
from __future__ import annotations

import re
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.images import build as images
from orchestrator.images import manifest as image_manifest
from orchestrator.images import wheelhouse

ROOT = Path(__file__).resolve().parents[1]
TAG_RE = re.compile(r"^zoobench/pytorch:(cpu|cuda)-[0-9a-f]{12}$")
NEEDED = ["manifests/images.yaml", ".dockerignore", "images/base/build.sh", "images/Dockerfile", "images/pytorch",
          "runners/contract", "runners/pytorch"]


def copy_repo(dest: Path) -> Path:
    """The files the pytorch image is made of, copied to ``dest`` (caches left behind)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for rel in NEEDED:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=skip)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture
def repo(tmp_path) -> Path:
    return copy_repo(tmp_path / "repo")


def spec(root: Path, name: str = "pytorch") -> image_manifest.ImageSpec:
    return image_manifest.load_manifest(root / "manifests" / "images.yaml")[name]


def tag(root: Path, variant: str = "cpu") -> str:
    return images.image_tag(spec(root), variant, root)


def test_real_manifest_declares_the_frameworks_runtimes_and_variants():
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    assert set(specs) >= {"pytorch", "keras", "mxnet", "keras-jax", "keras-torch", "onnxruntime", "openvino"}
    assert {n for n, s in specs.items() if s.reads} == {"onnxruntime", "openvino"}
    assert dict(specs["keras-jax"].build_args)["KERAS_BACKEND"] == "jax"
    assert dict(specs["keras-torch"].build_args)["KERAS_BACKEND"] == "torch"
    for name, s in specs.items():
        assert s.framework == name.split("-")[0]  # keras-jax and keras-torch run the keras runner
        assert set(s.variants) >= ({"cpu"} if name == "openvino" else {"cpu", "cuda"})  # OpenVINO: Intel GPUs only
        assert s.variants["cpu"].base_image == "offline"
        assert (ROOT / s.dockerfile).is_file()
        assert (ROOT / s.variants["cpu"].lock).is_file()
        assert s.dockerfile == "images/Dockerfile"  # one recipe for every runner
        assert f"runners/{s.framework}" in s.inputs


def test_build_args_come_from_the_manifest_and_change_the_tag(repo):
    s = spec(repo)
    args = images.build_args(s, "cpu", repo)
    assert args == {"FRAMEWORK": "pytorch", "PYTHON": "3.11", "LOCK": "images/pytorch/requirements.lock",
                    "BASE_IMAGE": images.base_tag(repo)}
    assert images.build_args(s, "cuda", repo)["PYTHON"] == "3.11"  # the offline base's CPython, like cpu
    before = tag(repo)
    path = repo / "manifests/images.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["images"]["pytorch"]["variants"]["cpu"]["build_args"] = {"SYSTEM_PACKAGES": "libquadmath0"}
    path.write_text(yaml.safe_dump(doc))
    assert images.build_args(spec(repo), "cpu", repo)["SYSTEM_PACKAGES"] == "libquadmath0"
    assert tag(repo) != before


def test_every_dockerfile_arg_is_passed_by_the_build():
    """images/Dockerfile's ARGs are the ones zoobench passes (no ARG silently left at its default)."""
    text = (ROOT / "images/Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, re.M))
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    passed = {"WHEELS_URL", "IMAGE_TAG"} | {arg for s in specs.values() for v in s.variants
                                            for arg in images.build_args(s, v, ROOT)}
    assert declared == passed, declared ^ passed


def test_tag_format_is_stable_and_independent_of_the_checkout_location(repo, tmp_path):
    first = tag(repo)
    assert TAG_RE.match(first), first
    assert tag(repo) == first
    assert tag(copy_repo(tmp_path / "elsewhere")) == first


@pytest.mark.parametrize("rel", [
    "runners/pytorch/zoobench_pytorch/backend.py",
    "runners/contract/zoobench_contract/cli.py",
    "runners/contract/pyproject.toml",
    "images/Dockerfile",
    "images/pytorch/requirements.lock",
    ".dockerignore",
])
def test_changing_an_input_changes_the_tag(repo, rel):
    before = {v: tag(repo, v) for v in ("cpu", "cuda")}
    with open(repo / rel, "a") as fh:
        fh.write("\n# changed\n")
    after = {v: tag(repo, v) for v in ("cpu", "cuda")}
    assert after["cpu"] != before["cpu"] and after["cuda"] != before["cuda"]


def test_a_new_input_file_changes_the_tag(repo):
    before = tag(repo)
    (repo / "runners/pytorch/zoobench_pytorch/extra.py").write_text("X = 1\n")
    assert tag(repo) != before


def test_caches_and_build_leftovers_do_not_change_the_tag(repo):
    before = tag(repo)
    pkg = repo / "runners/pytorch/zoobench_pytorch"
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "backend.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (pkg / "stray.pyc").write_bytes(b"\x00")
    (repo / "runners/pytorch/zoobench_pytorch.egg-info").mkdir()
    (repo / "runners/pytorch/zoobench_pytorch.egg-info/PKG-INFO").write_text("Name: x\n")
    (repo / "runners/contract/build/lib").mkdir(parents=True)
    (repo / "runners/contract/build/lib/cli.py").write_text("old copy\n")
    assert tag(repo) == before


def test_files_outside_the_inputs_do_not_change_the_tag(repo):
    before = tag(repo)
    (repo / "README.md").write_text("docs\n")
    (repo / "images/keras").mkdir(parents=True)
    (repo / "images/keras/requirements-cpu.lock").write_text("six==1\n")
    assert tag(repo) == before


def test_variants_get_different_tags_even_with_the_same_lock(repo):
    s = spec(repo)
    assert s.variants["cpu"].lock == s.variants["cuda"].lock
    cpu, cuda = tag(repo, "cpu"), tag(repo, "cuda")
    assert cpu.startswith("zoobench/pytorch:cpu-") and cuda.startswith("zoobench/pytorch:cuda-")
    assert cpu.split("-")[-1] != cuda.split("-")[-1]


def test_base_recipe_changes_only_offline_variants(repo):
    path = repo / "manifests/images.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["images"]["pytorch"]["variants"]["cuda"]["base_image"] = "nvidia/cuda:13.0.1-runtime-ubuntu24.04"
    path.write_text(yaml.safe_dump(raw))  # a public base (cuda is offline too in the real manifest)
    cpu, cuda = tag(repo, "cpu"), tag(repo, "cuda")
    base = images.base_tag(repo)
    assert re.match(r"^zoobench/base:bookworm-[0-9a-f]{12}$", base)
    with open(repo / "images/base/build.sh", "a") as fh:
        fh.write("# new package list\n")
    assert images.base_tag(repo) != base
    assert tag(repo, "cpu") != cpu
    assert tag(repo, "cuda") == cuda


def test_base_tag_matches_the_recipe_script(repo):
    """build.sh names its image from its own sha256; the orchestrator must compute the same tag."""
    import hashlib

    digest = hashlib.sha256((repo / "images/base/build.sh").read_bytes()).hexdigest()[:12]
    assert images.base_tag(repo) == f"zoobench/base:bookworm-{digest}"
    script = (repo / "images/base/build.sh").read_text()
    assert "sha256sum" in script and "cut -c1-12" in script and 'tag="zoobench/base:${SUITE}-${hash}"' in script


def test_explicit_base_reference_is_hashed(repo):
    path = repo / "manifests/images.yaml"
    raw = yaml.safe_load(path.read_text())
    default = tag(repo, "cuda")
    raw["images"]["pytorch"]["variants"]["cuda"]["base_image"] = "debian@sha256:" + "a" * 64
    path.write_text(yaml.safe_dump(raw))
    pinned = tag(repo, "cuda")
    assert pinned != default
    assert images.base_reference(spec(repo), "cuda", repo) == "debian@sha256:" + "a" * 64
    raw["images"]["pytorch"]["variants"]["cuda"]["base_image"] = "debian@sha256:" + "b" * 64
    path.write_text(yaml.safe_dump(raw))
    assert tag(repo, "cuda") not in (default, pinned)


def test_unknown_variant_names_the_variants(repo):
    with pytest.raises(images.ImageManifestError) as err:
        tag(repo, "gpu")
    message = str(err.value)
    assert "'gpu'" in message and "cpu" in message and "cuda" in message and "\n" not in message


def test_missing_input_names_the_field(repo):
    shutil.rmtree(repo / "runners/pytorch")
    with pytest.raises(images.ImageManifestError) as err:
        tag(repo)
    assert "images.pytorch.inputs" in str(err.value) and "runners/pytorch" in str(err.value)


GOOD = {"framework": "pytorch", "dockerfile": "images/Dockerfile", "inputs": ["runners/pytorch"],
        "variants": {"cpu": {"lock": "images/pytorch/requirements.lock", "base_image": "offline"}}}


def with_change(path: list[str], value) -> dict:
    import copy

    image = copy.deepcopy(GOOD)
    node = image
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return {"images": {"pytorch": image}}


@pytest.mark.parametrize("doc, expected", [
    (with_change(["dockerfile"], KeyError), ["images.pytorch.dockerfile", "Field required"]),
    (with_change(["colour"], "red"), ["images.pytorch.colour", "Extra inputs are not permitted"]),
    (with_change(["inputs"], []), ["images.pytorch.inputs", "non-empty list"]),
    (with_change(["inputs"], ["../outside"]), ["images.pytorch.inputs.0", "not inside the repository"]),
    (with_change(["variants"], {}), ["images.pytorch.variants", "at least cpu"]),
    (with_change(["variants", "cpu", "lock"], KeyError), ["images.pytorch.variants.cpu.lock", "Field required"]),
    (with_change(["variants", "cpu", "base_image"], KeyError), ["variants.cpu.base_image", "Field required"]),
    (with_change(["variants", "cpu", "base_image"], "a b"), ["variants.cpu.base_image", "offline, default"]),
    (with_change(["variants", "cpu", "python"], 3.1), ["variants.cpu.python", "quoted"]),
    (with_change(["variants", "cpu", "pull"], True), ["variants.cpu.pull", "Extra inputs are not permitted"]),
    (with_change(["variants"], {"gpu:1": {"lock": "x", "base_image": "default"}}), ["images.pytorch.variants", "'gpu:1'", "Docker tag"]),
    (with_change(["build_args"], {"LOCK": "x"}), ["images.pytorch.build_args", "LOCK is set by zoobench"]),
    (with_change(["build_args"], {"extra": "x"}), ["images.pytorch.build_args", "'extra' is not a Dockerfile ARG name"]),
    (with_change(["variants", "cpu", "build_args"], ["X"]), ["variants.cpu.build_args", "mapping"]),
    ({"images": {"PyTorch": GOOD}}, ["images", "'PyTorch'", "lower-case"]),
    ({"images": {}}, ["images", "missing or empty"]),
    ({"imgs": {"pytorch": GOOD}}, ["images", "Field required"]),
    ({"images": {"pytorch": GOOD}, "extra": 1}, ["field extra", "Extra inputs are not permitted"]),
])
def test_manifest_errors_name_the_file_the_field_and_the_fix(tmp_path, doc, expected):
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(images.ImageManifestError) as err:
        image_manifest.load_manifest(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message and ";" in message
    for part in expected:
        assert part in message, message


def test_manifest_missing_or_unparsable(tmp_path):
    with pytest.raises(images.ImageManifestError, match="manifest not found"):
        image_manifest.load_manifest(tmp_path / "nope.yaml")
    bad = tmp_path / "images.yaml"
    bad.write_text("images:\n  pytorch: [unclosed\n")
    with pytest.raises(images.ImageManifestError, match=r"line \d+: invalid YAML"):
        image_manifest.load_manifest(bad)


def test_errors_tuple_is_what_the_cli_catches():
    assert set(images.ERRORS) == {images.ImageManifestError, images.ImageBuildError}
    assert issubclass(images.ImageManifestError, ValueError)


def test_lock_for_python_keeps_only_matching_markers():
    lock = (
        "# header\n"
        "numpy==2.4.6 ; python_version == \"3.11\" \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "numpy==2.5.5 ; python_version == \"3.12\" \\\n    --hash=sha256:cc\n"
        "six==1.17.0 \\\n    --hash=sha256:dd  # from requirements.in\n"
    )
    for python, numpy in (("3.11", "numpy==2.4.6"), ("3.12", "numpy==2.5.5")):
        lines = wheelhouse.lock_for_python(lock, python).splitlines()
        assert [line.split()[0] for line in lines] == [numpy, "six==1.17.0"]
        assert all(";" not in line and "#" not in line for line in lines)
    assert "--hash=sha256:aa --hash=sha256:bb" in wheelhouse.lock_for_python(lock, "3.11")


def test_wheel_server_serves_the_folder_on_loopback(tmp_path):
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    with wheelhouse.WheelServer(tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "pkg-1.0-py3-none-any.whl", timeout=10) as resp:
            assert resp.read() == b"wheel bytes"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert "pkg-1.0-py3-none-any.whl" in resp.read().decode()


class FakeImages:
    def __init__(self, present: set[str]):
        self.present = present

    def get(self, tag: str):
        from docker.errors import ImageNotFound

        if tag not in self.present:
            raise ImageNotFound(tag)
        return object()


class FakeClient:
    def __init__(self, present: set[str]):
        self.images = FakeImages(present)

    @property
    def api(self):
        raise AssertionError("an existing image must not be rebuilt")


def test_build_is_a_no_op_when_the_tag_exists(repo):
    s = spec(repo)
    current = images.image_tag(s, "cpu", repo)
    client = FakeClient({current})
    assert images.image_exists(client, current) and not images.image_exists(client, current + "x")
    logged: list[str] = []
    assert images.build(s, "cpu", repo, client, on_log=logged.append) == current
    assert not (repo / ".cache").exists()


# ---------------------------------------------------------------- a real (tiny) build


TINY_DOCKERFILE = """\
ARG BASE_IMAGE=unset
FROM ${BASE_IMAGE}
ARG WHEELS_URL=
ARG LOCK=
ARG IMAGE_TAG=
COPY ${LOCK} /tmp/requirements.lock
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --find-links "$WHEELS_URL" \\
      --require-hashes -r /tmp/requirements.lock
RUN /opt/venv/bin/python -c "import six"
ENV ZOOBENCH_IMAGE_TAG=$IMAGE_TAG
"""


# fails in its first step, so the legacy builder leaves no intermediate image behind
BROKEN_DOCKERFILE = """\
ARG BASE_IMAGE=unset
FROM ${BASE_IMAGE}
RUN echo 'error: deliberate failure' && exit 3
"""


def tiny_repo(dest: Path, dockerfile: str) -> Path:
    """A repository with one tiny image: the offline base + one locked wheel (six, from the keras lock)."""
    keras_lock = (ROOT / "images/keras/requirements-cpu.lock").read_text().replace("\\\n", " ")
    six = next(line for line in keras_lock.splitlines() if line.startswith("six=="))
    for rel in ("images/base/build.sh", ".dockerignore"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    (dest / "images/tiny").mkdir(parents=True)
    (dest / "images/tiny/Dockerfile").write_text(dockerfile)
    (dest / "images/tiny/requirements.lock").write_text(six + "\n")
    (dest / "manifests").mkdir()
    (dest / "manifests/images.yaml").write_text(yaml.safe_dump({"images": {"tiny": {
        "framework": "none", "dockerfile": "images/tiny/Dockerfile", "inputs": ["images/tiny"],
        "variants": {"cpu": {"lock": "images/tiny/requirements.lock", "base_image": "offline"}}}}}))
    return dest


@pytest.mark.docker
def test_tiny_image_builds_from_the_served_wheelhouse_and_failures_name_the_log(docker_client, tmp_path):
    root = tiny_repo(tmp_path / "ok", TINY_DOCKERFILE)
    tiny = image_manifest.load_manifest(root / "manifests/images.yaml")["tiny"]
    built: list[str] = []
    try:
        lines: list[str] = []
        tag = images.build(tiny, "cpu", root, docker_client, on_log=lines.append)
        built.append(tag)
        assert tag == images.image_tag(tiny, "cpu", root) and images.image_exists(docker_client, tag)
        assert any("Successfully tagged " + tag in line for line in lines)
        assert list((root / ".cache/wheelhouse/tiny-cpu").glob("six-*.whl"))
        assert "Successfully tagged" in (root / ".cache/logs/build-tiny-cpu.log").read_text()
        out = docker_client.containers.run(tag, ["/opt/venv/bin/python", "-c", "import os, six; "
                                           "print(os.environ['ZOOBENCH_IMAGE_TAG'])"],
                                           remove=True, network_mode="none")
        assert out.decode().strip() == tag
        assert images.build(tiny, "cpu", root, docker_client, on_log=lines.append) == tag  # no-op

        broken = tiny_repo(tmp_path / "broken", BROKEN_DOCKERFILE)
        spec = image_manifest.load_manifest(broken / "manifests/images.yaml")["tiny"]
        with pytest.raises(images.ImageBuildError) as err:
            images.build(spec, "cpu", broken, docker_client, on_log=lambda line: None)
        message = str(err.value)
        assert "image tiny (cpu)" in message and "exited with code 3" in message and "\n" not in message
        assert "deliberate failure" in message
        log = broken / ".cache/logs/build-tiny-cpu.log"
        assert log.is_file() and "deliberate failure" in log.read_text()
        assert str(log) in message or str(log.relative_to(Path.cwd())) in message
    finally:
        for tag in built:
            docker_client.images.remove(tag, force=True)


def _pins(text: str) -> dict[str, str]:
    return dict(line.split()[0].split("==", 1) for line in text.splitlines() if "==" in line.split(" ")[0])


@pytest.mark.parametrize("image, variant", [(i, v) for i, s in image_manifest.load_manifest(ROOT / "manifests/images.yaml").items()
                                            for v in s.variants])
def test_each_lock_pins_its_inputs_with_hashes_for_the_variants_python(image, variant):
    """The uv-made lock (make lock) pins every requirement of its .in, and every entry that applies to
    the variant's Python has hashes."""
    var = image_manifest.load_manifest(ROOT / "manifests/images.yaml")[image].variant(variant)
    lock = (ROOT / var.lock).read_text()
    wanted = wheelhouse.lock_for_python(lock, var.python)
    entries = wanted.splitlines()
    assert entries and all("--hash=sha256:" in e for e in entries), var.lock
    pins = _pins(wanted)
    assert len(pins) == len(entries)  # one entry per package for this Python
    requirements = (ROOT / var.lock).with_suffix(".in").read_text()
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            name = name.split("[", 1)[0]  # tensorflow[and-cuda]: the extra's packages are pinned on their own
            assert name in pins, f"{var.lock}: {name} missing for Python {var.python}"
            assert not version or pins[name] == version, f"{var.lock}: {name}=={pins[name]}, .in says {version}"
