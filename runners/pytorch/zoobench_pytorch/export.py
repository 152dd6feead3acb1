"""``predict export`` for PyTorch: ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``),
one self-contained ``model.onnx`` (weights inside; a model over protobuf's 2 GiB limit gets its weights
as external data files beside it, all listed), NCHW float32 input ``input`` of shape
``[batch, 3, H, W]`` with a free batch axis, output ``logits``.

The TorchScript exporter traces one forward pass of the eval-mode model (no grad) and needs the
``onnx`` package (the image installs it); the dynamo exporter would need onnxscript too and writes
``.onnx`` + ``.onnx.data``, so it is not used.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from zoobench_contract.backend import ModelSpec, UsageError
from zoobench_contract.export import ExportInfo, optional_version

MODEL_FILE = "model.onnx"
INPUT, OUTPUT = "input", "logits"


def export_model(net: torch.nn.Module, spec: ModelSpec, out_dir: Path, fmt: str, opset: int,
                 input_size: int) -> ExportInfo:
    """Write ``out_dir/model.onnx`` (ONNX opset ``opset``) of ``net`` at ``input_size`` px."""
    if fmt != "onnx":
        raise UsageError(f"--format {fmt}: the pytorch backend exports onnx only")
    options: dict[str, Any] = {
        "dynamo": False,
        "export_params": True,
        "do_constant_folding": True,
        "training": "EVAL",
        "dynamic_axes": {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
    }
    before = {p.name for p in out_dir.iterdir()}
    x = torch.zeros(1, 3, input_size, input_size, device=next(net.parameters()).device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes traced as constants: H, W are fixed
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # a strided Slice stays
        torch.onnx.export(net.eval(), (x,), str(out_dir / MODEL_FILE), opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT], training=torch.onnx.TrainingMode.EVAL,
                          **{k: v for k, v in options.items() if k != "training"})
    written = sorted(p.name for p in out_dir.iterdir() if p.name not in before and p.name != MODEL_FILE)
    options["onnx"] = optional_version("onnx")
    return ExportInfo("torch.onnx.export", torch.__version__, opset, [MODEL_FILE, *written], INPUT, "NCHW", OUTPUT,
                      options)
