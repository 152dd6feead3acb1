"""`zoobench data ...` as a user runs it: output, exit codes, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import zoobench
from orchestrator.data import val_ground_truth

# Until the top-level CLI imports, run data_app the way orchestrator.cli.main does (DataError -> exit 2).
SHIM = ("import sys; from zoobench_contract.clitools import run_app; from zoobench_contract.dataset import DataError; "
        "from orchestrator.data.cli import data_app; run_app(data_app, sys.argv[1:], {DataError: 2})")


@pytest.fixture(scope="module")
def data_cli():
    real = subprocess.run([sys.executable, "-c", "import orchestrator.cli"], capture_output=True).returncode == 0

    def run(*args: str) -> subprocess.CompletedProcess:
        if real:
            return zoobench("data", *args, timeout=300)
        return subprocess.run([sys.executable, "-c", SHIM, *args], capture_output=True, text=True, timeout=300)

    return run


def test_sample_then_check_is_clean(data_cli, tmp_path):
    out = tmp_path / "sample"
    proc = data_cli("sample", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "n07920052/coffee.png" in proc.stdout and "espresso" in proc.stdout
    proc = data_cli("check", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n_images"] == 6 and report["ok"] and report["issues"] == []


def test_check_exit_codes(data_cli, tmp_path):
    root = tmp_path / "val"
    (root / "n01440764").mkdir(parents=True)
    Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(root / "n01440764" / "cmyk.jpg", "JPEG")
    proc = data_cli("check", str(root))
    assert proc.returncode == 0, proc.stderr  # a warning does not fail
    assert "n01440764/cmyk.jpg" in proc.stdout and "CMYK" in proc.stdout

    (root / "n01440764" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    proc = data_cli("check", str(root))
    assert proc.returncode == 1 and "n01440764/broken.jpg" in proc.stdout
    assert "Traceback" not in proc.stderr

    proc = data_cli("check", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "nowhere" in proc.stderr


def test_prepare_from_folder(data_cli, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    names = sorted(val_ground_truth())[:4]
    for k, name in enumerate(names):
        Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(flat / name, "JPEG")
    (flat / "stray.JPEG").write_bytes(b"x")
    out = tmp_path / "val"
    proc = data_cli("prepare", "--val-dir", str(flat), "--out", str(out), "--link", "--allow-incomplete")
    assert proc.returncode == 0, proc.stderr
    assert "stray.JPEG" in proc.stdout and "hard-linked 4" in proc.stdout and "incomplete" in proc.stdout
    for name in names:
        assert (out / val_ground_truth()[name] / name).is_file()
    proc = data_cli("prepare", "--val-dir", str(flat), "--out", str(out), "--link")  # a subset is not asked for
    assert proc.returncode == 1 and "already in place 4" in proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert errors == [errors[-1]] and errors[0].startswith("error: incomplete: 4 of 50000 val images")
    assert "--allow-incomplete" in errors[0]

    proc = data_cli("prepare", "--val-tar", str(tmp_path / "ILSVRC2012_img_val.tar"), "--out", str(out))
    assert proc.returncode == 2 and "ILSVRC2012_img_val.tar: no such file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
