"""The keras runner's back ends, without any framework: KERAS_BACKEND selection, one module per back end
for every keras image of images.yaml, TensorFlow imported by the tensorflow module alone, and the
keras-torch lock sharing the pytorch image's torch wheels."""
from __future__ import annotations

import ast
import re
import sys

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "runners" / "keras"))
from zoobench_keras import backends  # noqa: E402

PACKAGE = ROOT / "runners" / "keras" / "zoobench_keras"
IMAGES = yaml.safe_load((ROOT / "manifests" / "images.yaml").read_text())["images"]
KERAS_IMAGES = {name: spec for name, spec in IMAGES.items() if spec["framework"] == "keras"}


def test_keras_backend_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert backends.selected() == "tensorflow"
    for name in ("jax", "torch", "tensorflow"):
        monkeypatch.setenv("KERAS_BACKEND", name)
        assert backends.selected() == name
    monkeypatch.setenv("KERAS_BACKEND", "numpy")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND='numpy'"):
        backends.selected()


def test_every_keras_image_has_its_back_end_module():
    chosen = {name: spec.get("build_args", {}).get("KERAS_BACKEND", "tensorflow") for name, spec in KERAS_IMAGES.items()}
    assert chosen == {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
    for name in chosen.values():
        assert (PACKAGE / "backends" / f"{name}.py").is_file(), name


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_each_back_end_module_imports_its_framework():
    frameworks = {"tensorflow", "jax", "jaxlib", "torch"}
    own = {"tensorflow": {"tensorflow"}, "jax": {"jax", "jaxlib"}, "torch": {"torch"}}
    for path in sorted(PACKAGE.rglob("*.py")):
        used = _imports(path) & frameworks
        if path.parent.name == "backends" and path.stem in own:
            assert used <= own[path.stem], (path.name, used)
        else:
            assert not used, (path.relative_to(PACKAGE), used)


def _pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """package -> (version, hashes) of a uv lock."""
    pins, current = {}, None
    for line in (ROOT / lock).read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line):
            current = m.group(1).lower()
            pins[current] = (m.group(2), set())
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].add(h.group(1))
    return {k: (v, frozenset(h)) for k, (v, h) in pins.items()}


def test_keras_torch_shares_the_pytorch_images_torch():
    keras_torch, pytorch = _pins("images/keras-torch/requirements.lock"), _pins("images/pytorch/requirements.lock")
    assert keras_torch["torch"] == pytorch["torch"]
    assert "tensorflow" not in keras_torch and "tensorflow-cpu" not in keras_torch
    jax_cpu, jax_cuda = _pins("images/keras-jax/requirements-cpu.lock"), _pins("images/keras-jax/requirements-cuda.lock")
    assert jax_cpu["jax"][0] == jax_cpu["jaxlib"][0] == jax_cuda["jax"][0] == jax_cuda["jax-cuda12-plugin"][0]
    assert not {"torch", "tensorflow", "tensorflow-cpu"} & (set(jax_cpu) | set(jax_cuda))
    assert keras_torch["keras"] == jax_cpu["keras"] == jax_cuda["keras"]
