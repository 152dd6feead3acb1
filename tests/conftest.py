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
