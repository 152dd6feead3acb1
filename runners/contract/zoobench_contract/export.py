"""``predict export``: the model, built as ``predict run`` builds it, written in a deployment format
(ONNX) with ``export.json`` (exporter, opset, input layout, the source's preprocessing and facts, a
probe batch with the source's logits, the sha256 of every file). STUB: the exporters helper fills it.
"""
from __future__ import annotations

from pathlib import Path

import typer


def export_cmd(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    out: Path = typer.Option(..., "--out", help="empty folder for the exported files and export.json"),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | imagenet:VARIANT | random"),
    fmt: str = typer.Option("onnx", "--format", help="onnx"),
    opset: int = typer.Option(17, "--opset", min=7, help="ONNX opset"),
) -> None:
    """Export one model (CPU, fp32) to --out: the model files, probe.npz and, last, export.json."""
    raise NotImplementedError("predict export: stub")
