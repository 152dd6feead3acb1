"""The results folder's layout, spelled once: what a published run holds, how a run in progress is
named, where the logs go, and where the containers see their folders.

A finished run is ``RESULTS/<image>-<model>/`` holding the contract's outputs (``OUTPUTS``) and
``request.json`` (what it was made for, with the outputs' checksums); it is written as
``<name>.partial`` and renamed into place, the previous one kept as ``<name>.old`` during the swap.
"""
from __future__ import annotations

from pathlib import Path

from zoobench_contract.backend import WEIGHTS_MOUNT
from zoobench_contract.outputs import PREDICTIONS_FILE, RUN_FILE

OUTPUTS = (PREDICTIONS_FILE, RUN_FILE)  # what `predict run` writes; a run is published with both
REQUEST_FILE = "request.json"  # the resume record a local run publishes beside the outputs
PARTIAL_SUFFIX = ".partial"  # a run (or a pixel cache) being written
OLD_SUFFIX = ".old"  # the previous run while a new one is renamed into place
LOGS_DIR = "logs"  # RESULTS/logs/<run>.log, pixels-<key>.log, data-problems.txt
OUT_MOUNT = "/out"  # where `predict run` writes inside the container (a fresh folder per run)
PIXELS_MOUNT = "/pixels"  # where a job's pixel cache is mounted, read-only

__all__ = ["LOGS_DIR", "OLD_SUFFIX", "OUTPUTS", "OUT_MOUNT", "PARTIAL_SUFFIX", "PIXELS_MOUNT",
           "PREDICTIONS_FILE", "REQUEST_FILE", "RUN_FILE", "WEIGHTS_MOUNT", "log_dir", "published_runs"]


def log_dir(results: Path) -> Path:
    """The folder of a results folder's logs."""
    return results / LOGS_DIR


def published_runs(results: Path) -> list[Path]:
    """The run folders of ``results`` that a local run or a Slurm task published (a request.json, not partial)."""
    return [p.parent for p in results.glob(f"*/{REQUEST_FILE}") if not p.parent.name.endswith(PARTIAL_SUFFIX)]
