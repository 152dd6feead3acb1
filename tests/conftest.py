"""Shared fixtures. Docker tests skip with a reason on a laptop without Docker, but FAIL under CI=true."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "runners" / "contract"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI: a test that silently skips in CI is a defect."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def northcutt_dir() -> Path:
    path = SHARED / "northcutt"
    require(path.is_dir(), f"{path} (published reference predictions) is not beside the checkout")
    return path


def tar_of(path: Path, members: dict[str, bytes]) -> Path:
    """A plain tar at ``path`` holding ``members`` (name -> bytes), as hand-made test input."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def zoobench(*args: str, timeout: float = 3600, env: dict | None = None, check: bool = False):
    """Run the installed ``zoobench`` console script (a real subprocess, as a user would)."""
    import subprocess

    exe = Path(sys.executable).with_name("zoobench")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"zoobench {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def predict_in_process(*args: str) -> int:
    """``predict ARGS`` through the contract's CLI in this process (the backend an entry point or a test
    installs); its exit code."""
    from zoobench_contract import cli

    try:
        cli.main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def one_line_error(proc, needle: str, code: int = 2) -> None:
    """Exit code ``code`` and exactly one error line, the last one, naming the problem; no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and needle in errors[0], err


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        require(False, f"Docker engine not reachable ({type(exc).__name__}); run `make docker`")
    return client


@pytest.fixture(scope="session")
def image_tags(docker_client) -> dict[str, str]:
    """Build (or reuse, by content hash) every CPU image through the real CLI; name -> tag."""
    from orchestrator.bench import imagefacts

    zoobench("images", "build", "--variant", "cpu", check=True, timeout=3000)
    return imagefacts.image_tags()


@pytest.fixture(scope="session")
def cuda_image_tags(docker_client, image_tags) -> dict[str, str]:
    """Every cuda image (checked on the CPU: tests/test_cuda_images.py); name -> tag. CI builds them
    through the real CLI after the cpu ones (same offline base; a variant with the cpu lock reuses its
    wheelhouse); elsewhere they are built when ZOOBENCH_TEST_CUDA=1, else used when already built."""
    from orchestrator.bench import imagefacts
    from orchestrator.images import build as images
    from orchestrator.images import manifest as image_manifest

    if IN_CI or os.environ.get("ZOOBENCH_TEST_CUDA") == "1":
        zoobench("images", "build", "--variant", "cuda", check=True, timeout=5400)
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    tags = imagefacts.tags_of({name: spec for name, spec in specs.items() if "cuda" in spec.variants}, "cuda")
    missing = sorted(tag for tag in tags.values() if not images.image_exists(docker_client, tag))
    require(not missing, f"cuda images not built ({', '.join(missing)}): `zoobench images build --variant cuda` "
                         "or ZOOBENCH_TEST_CUDA=1")
    return tags


FRAMEWORK_IMAGES = ("pytorch", "keras", "mxnet")  # the training frameworks' images of the fault and resume tests


def framework_models(profile: str) -> list[str]:
    """``--model IMAGE/MODEL`` for each model ``profile`` lists for :data:`FRAMEWORK_IMAGES`: the reliability
    tests bench these (the other images' runs would add time, not cases)."""
    import yaml

    models = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"][profile]["models"]
    return [a for image in FRAMEWORK_IMAGES for m in models[image] for a in ("--model", f"{image}/{m}")]


CONVERTED_SOURCE = "pytorch"  # the runtime images (onnxruntime, openvino) of the tests serve its models, converted


@pytest.fixture(scope="session")
def converted_cache(image_tags, tmp_path_factory) -> Path:
    """A conversions cache of the tests' own (``ZOOBENCH_CONVERTED_CACHE``), filled by the real ``zoobench
    convert``: PyTorch's Lite0 with its real weights, and Lite0 plus the smoke profile's PyTorch models with
    random weights. Returns the cache root; :func:`converted_mount` is what a runtime container mounts."""
    import yaml

    root = tmp_path_factory.mktemp("converted")
    env = {"ZOOBENCH_CONVERTED_CACHE": str(root)}
    smoke = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"]["smoke"]["models"]
    convert = ["convert", "--from", CONVERTED_SOURCE, "--to", "onnx", "--no-build"]
    zoobench(*convert, "--model", "efficientnet_lite0", env=env, check=True, timeout=1800)
    models = [a for m in ["efficientnet_lite0", *smoke[CONVERTED_SOURCE]] for a in ("--model", m)]
    zoobench(*convert, "--weights", "random", *models, env=env, check=True, timeout=1800)
    return root


def converted_mount(root: Path, image_tags: dict[str, str]) -> tuple[Path, str]:
    """(host folder, container folder) of the conversions of :data:`CONVERTED_SOURCE` in cache ``root``."""
    return (root / "onnx" / CONVERTED_SOURCE / image_tags[CONVERTED_SOURCE].rsplit(":", 1)[-1],
            f"/converted/{CONVERTED_SOURCE}")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "val"
    zoobench("data", "sample", "--out", str(out), check=True)
    out.chmod(0o755)
    return out


# ---------------------------------------------------------------- fault suite summary

FAULT_CASES: list[tuple[str, str]] = []


@pytest.fixture
def fault_case(request):
    """``fault_case(outcome)`` records this test's case and what zoobench did, for the summary table."""

    def record(outcome: str) -> None:
        FAULT_CASES.append((request.node.name.removeprefix("test_"), outcome))

    return record


def pytest_terminal_summary(terminalreporter):
    if not FAULT_CASES:
        return
    terminalreporter.section("fault suite: case -> outcome")
    width = max(len(case) for case, _ in FAULT_CASES)
    for case, outcome in FAULT_CASES:
        terminalreporter.write_line(f"{case.ljust(width)}  {outcome}")
