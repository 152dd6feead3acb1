"""``predict export``: the model, built as ``predict run`` builds it (CPU, fp32), written in a deployment
format (ONNX) into an empty ``--out`` folder, with ``probe.npz`` (a fixed batch and the source model's
logits for it) and, last and atomically, ``export.json`` (exporter, opset, input layout, the source's
preprocessing and facts, the sha256 of every file). A folder without ``export.json`` is not an export.

A backend exports through its optional ``export_model(net, spec, out_dir, fmt, opset, input_size) ->``
:class:`ExportInfo`; the probe, the checks of the written file and ``export.json`` are done here, the same
for every framework. Every ONNX file is read back with :func:`onnx_signature` (a small reader of the
ONNX protobuf, no dependency): its opset, input and output must be what the backend says, and the input
``[batch, 3, H, W]`` (NCHW) or ``[batch, H, W, 3]`` (NHWC) with a free batch axis. Where the ``onnx``
package is installed, ``onnx.checker`` validates the file too.

Exit codes: 2 when the model, weights, format or folder cannot be exported as asked (one line saying
why, and what works instead), 1 ``error: export failed: <the exporter's reason>`` when the exporter
itself fails; the files it left are removed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import mmap
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import typer

from .backend import ModelSpec, UsageError, WeightsUnavailable
from .dataset import file_sha256
from .facts import facts_for, first_line
from .outputs import atomic_write, write_json
from .runtime import (EXIT_FAILED, RunFailed, UserError, configure_mode, configure_precision, environment, fail,
                      find_model, load_backend, loaded_weights_file, weights_record)

SCHEMA = 1
FORMATS = ("onnx",)
EXPORT_FILE = "export.json"
PROBE_FILE = "probe.npz"
PROBE_BATCH = 2
PROBE_SEED = 0
LAYOUTS = ("NCHW", "NHWC")
EXPORTERS = "the pytorch, keras (keras-torch, keras-jax) and mxnet images"


@dataclass(frozen=True)
class ExportInfo:
    """What a backend's ``export_model`` wrote and how (``export.json``'s ``exporter``/``input``/``output``)."""

    exporter: str
    """The call that wrote the file, e.g. ``torch.onnx.export``."""
    exporter_version: str
    opset: int
    files: list[str]
    """The files written, relative to the output folder; the first is the model (``model.onnx``)."""
    input_name: str
    input_layout: str
    """``NCHW`` or ``NHWC``: what the exported graph takes (the probe input is NHWC either way)."""
    output_name: str
    options: dict[str, Any] = field(default_factory=dict)
    """The exporter's settings, as passed (dynamic axes, constant folding...)."""


@dataclass(frozen=True)
class OnnxValue:
    name: str
    elem_type: int  # TensorProto.DataType: 1 = FLOAT
    dims: list[int | str | None]  # a size, a symbolic name (dim_param), or unknown


@dataclass(frozen=True)
class OnnxSignature:
    """The parts of an ONNX model this contract checks: opsets, graph inputs (initializers left out), outputs."""

    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[OnnxValue]
    outputs: list[OnnxValue]

    @property
    def opset(self) -> int | None:
        return self.opsets.get("") or self.opsets.get("ai.onnx")


# ------------------------------------------------------------------ a minimal ONNX (protobuf) reader

def _varint(buf: Any, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise ValueError("malformed varint")


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """(field number, value) of one protobuf message: an int (varint) or a (start, end) span (bytes)."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise ValueError("truncated field")
            yield number, (i, i + n)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            yield number, None
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if i != end:
        raise ValueError("truncated message")


def _text(buf: Any, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _value_info(buf: Any, span: tuple[int, int]) -> OnnxValue:
    name, elem, dims = "", 0, []
    for number, value in _fields(buf, *span):
        if number == 1:
            name = _text(buf, value)
        elif number == 2:  # TypeProto
            for n2, tensor in _fields(buf, *value):
                if n2 != 1:  # tensor_type only
                    continue
                for n3, v3 in _fields(buf, *tensor):
                    if n3 == 1:
                        elem = v3
                    elif n3 == 2:  # TensorShapeProto
                        for n4, dim in _fields(buf, *v3):
                            if n4 != 1:
                                continue
                            size: int | str | None = None
                            for n5, v5 in _fields(buf, *dim):
                                size = v5 if n5 == 1 else _text(buf, v5) if n5 == 2 else size
                            dims.append(size)
    return OnnxValue(name, elem, dims)


def onnx_signature(path: Path) -> OnnxSignature:
    """Read opsets, inputs and outputs of the ONNX file ``path`` (weights skipped, not loaded);
    ValueError when it is not an ONNX model."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path.name} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _signature(buf)
            except IndexError:
                raise ValueError(f"{path.name}: truncated protobuf") from None


def _signature(buf: Any) -> OnnxSignature:
    ir, producer, opsets, graph = 0, "", {}, None
    for number, value in _fields(buf, 0, len(buf)):
        if number == 1:
            ir = value
        elif number == 2:
            producer = _text(buf, value)
        elif number == 7:
            graph = value
        elif number == 8:
            domain, version = "", 0
            for n2, v2 in _fields(buf, *value):
                domain, version = (_text(buf, v2), version) if n2 == 1 else (domain, v2) if n2 == 2 else (domain, version)
            opsets[domain] = version
    if graph is None or not opsets:
        raise ValueError("no graph or no opset_import: not an ONNX model")
    inputs, outputs, initializers = [], [], set()
    for number, value in _fields(buf, *graph):
        if number == 11:
            inputs.append(_value_info(buf, value))
        elif number == 12:
            outputs.append(_value_info(buf, value))
        elif number == 5:  # TensorProto: its name (field 8); raw data skipped
            initializers.update(_text(buf, v) for n, v in _fields(buf, *value) if n == 8)
    return OnnxSignature(ir, producer, opsets, [v for v in inputs if v.name not in initializers], outputs)


# ------------------------------------------------------------------ checks of what a backend wrote

def expected_input_shape(layout: str, size: int) -> list[int | None]:
    return [None, 3, size, size] if layout == "NCHW" else [None, size, size, 3]


def check_onnx(path: Path, info: ExportInfo, input_size: int, num_classes: int) -> OnnxSignature:
    """The written model is what ``info`` says: one float32 input ``info.input_name`` of the expected
    shape with a free batch axis, one output ``info.output_name`` of ``num_classes``, the opset asked;
    then ``onnx.checker`` where the ``onnx`` package is installed. RunFailed (exit 1) when not."""
    try:
        sig = onnx_signature(path)
    except (OSError, ValueError) as exc:
        fail(f"export failed: {path.name} is not a readable ONNX model ({exc})", EXIT_FAILED)
    problems = []
    if sig.opset != info.opset:
        problems.append(f"opset {sig.opset}, not {info.opset}")
    if [v.name for v in sig.inputs] != [info.input_name]:
        problems.append(f"inputs {[v.name for v in sig.inputs]}, not [{info.input_name!r}]")
    else:
        dims, want = sig.inputs[0].dims, expected_input_shape(info.input_layout, input_size)
        if sig.inputs[0].elem_type != 1:
            problems.append(f"input type {sig.inputs[0].elem_type}, not float32 (1)")
        if len(dims) != 4 or isinstance(dims[0], int) or dims[1:] != want[1:]:
            problems.append(f"input shape {dims}, not {want} with a free batch axis")
    if [v.name for v in sig.outputs] != [info.output_name]:
        problems.append(f"outputs {[v.name for v in sig.outputs]}, not [{info.output_name!r}]")
    elif sig.outputs[0].dims and isinstance(sig.outputs[0].dims[-1], int) and sig.outputs[0].dims[-1] != num_classes:
        problems.append(f"output shape {sig.outputs[0].dims}, not [batch, {num_classes}]")
    if problems:
        fail(f"export failed: {path.name} is not what the exporter reported: {'; '.join(problems)}", EXIT_FAILED)
    if importlib.util.find_spec("onnx") is not None:
        import onnx

        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # noqa: BLE001 - onnx's ValidationError and friends: one line
            fail(f"export failed: onnx.checker rejects {path.name} ({first_line(exc)})", EXIT_FAILED)
    return sig


def check_out(out: Path) -> None:
    """``--out`` is absent or an empty folder (an export never mixes with older files)."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: not a folder")
    if out.is_dir() and any(out.iterdir()):
        fail(f"--out {out}: not empty; export into a new or empty folder")


def check_weights(weights: str) -> None:
    if weights != "random" and weights != "imagenet" and not weights.startswith("imagenet:"):
        fail(f"--weights {weights}: export takes imagenet, imagenet:VARIANT or random (a converted model is "
             "cached per weights choice, not per file)")


def remove_new_files(out: Path, before: set[str]) -> None:
    """What a failed exporter left in ``out`` (files only), so no half export stays behind."""
    for path in out.iterdir() if out.is_dir() else []:
        if path.name not in before and path.is_file():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def exporter_output() -> Iterator[None]:
    """What exporters print (Python or native code, stdout or stderr: "Saved artifact at ...", warnings)
    is held in a temporary file, so that stdout keeps the contract's one line; it is copied to stderr when
    the export succeeds and dropped when it fails (torch then dumps its whole traced graph; the error line
    carries the reason), unless ZOOBENCH_DEBUG is set."""
    ok = False
    with tempfile.TemporaryFile() as held:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        try:
            yield
            ok = True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if ok or os.environ.get("ZOOBENCH_DEBUG"):
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def probe_batch(size: int) -> np.ndarray:
    """The fixed probe input: 2 x H x W x 3 float32 NHWC, already normalised (standard normal, seed 0)."""
    return np.random.default_rng(PROBE_SEED).standard_normal((PROBE_BATCH, size, size, 3)).astype(np.float32)


def write_probe(path: Path, x: np.ndarray, logits: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, input=x, logits=logits))


def run_exporter(backend: Any, net: Any, spec: ModelSpec, out: Path, fmt: str, opset: int,
                 size: int) -> ExportInfo:
    """The backend's ``export_model``; any exception but a one-line refusal is ``export failed`` (exit 1)."""
    before = {p.name for p in out.iterdir()}
    try:
        with exporter_output():
            info = backend.export_model(net, spec, out, fmt, opset, size)
    except (UserError, UsageError, WeightsUnavailable, RunFailed):
        remove_new_files(out, before)
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter's own reason, in one line
        remove_new_files(out, before)
        if os.environ.get("ZOOBENCH_DEBUG"):
            raise
        fail(f"export failed: {first_line(exc)}", EXIT_FAILED)
    if not isinstance(info, ExportInfo) or info.input_layout not in LAYOUTS or not info.files:
        remove_new_files(out, before)
        fail(f"export failed: the {backend.framework} backend's export_model returned {info!r}", EXIT_FAILED)
    missing = [name for name in info.files if not (out / name).is_file()]
    if missing:
        remove_new_files(out, before)
        fail(f"export failed: the exporter did not write {', '.join(missing)}", EXIT_FAILED)
    return info


def export_cmd(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    out: Path = typer.Option(..., "--out", help="empty folder for the exported files and export.json"),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | imagenet:VARIANT | random"),
    fmt: str = typer.Option("onnx", "--format", help="onnx"),
    opset: int = typer.Option(17, "--opset", min=7, help="ONNX opset"),
) -> None:
    """Export one model (CPU, fp32) to --out: the model files, probe.npz and, last, export.json."""
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: predict export writes {', '.join(FORMATS)}")
    check_weights(weights)
    check_out(out)
    backend = load_backend()
    spec = find_model(backend, model)
    if not hasattr(backend, "export_model"):
        fail(f"the {backend.framework} backend cannot export models (no export_model); predict export works in "
             f"{EXPORTERS}")
    prep = backend.preprocessing_for(spec, weights) if hasattr(backend, "preprocessing_for") else spec.preprocessing
    size = prep.crop_size
    configure_precision(backend, "fp32", "cpu")
    configure_mode(backend, "default", "cpu")

    t0 = time.perf_counter()
    net = backend.load(spec, weights, "cpu")
    t_load = time.perf_counter() - t0
    record = weights_record(weights, spec, loaded_weights_file(backend, spec, weights))
    model_facts = facts_for(backend, net, spec, size, None)

    t0 = time.perf_counter()
    x = probe_batch(size)
    logits = np.asarray(backend.predict(net, x), np.float32)  # the source model, before the exporter touches it
    if logits.shape != (PROBE_BATCH, spec.num_classes) or not np.isfinite(logits).all():
        fail(f"{spec.name}: the probe batch gave logits of shape {logits.shape} (finite: "
             f"{bool(np.isfinite(logits).all())}); expected ({PROBE_BATCH}, {spec.num_classes}) finite", EXIT_FAILED)
    t_probe = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = run_exporter(backend, net, spec, out, fmt, opset, size)
    t_export = time.perf_counter() - t0
    try:
        check_onnx(out / info.files[0], info, size, spec.num_classes)
    except RunFailed:
        remove_new_files(out, set())
        raise

    write_probe(out / PROBE_FILE, x, logits)
    files = {name: file_sha256(out / name) for name in [*info.files, PROBE_FILE]}
    env = environment(backend)
    source: dict[str, Any] = {"framework": backend.framework, "framework_version": env["framework_version"],
                              "image_tag": os.environ.get("ZOOBENCH_IMAGE_TAG"), "model": spec.name}
    if backend.framework == "keras":
        source["keras_backend"] = env.get("keras_backend")
    source["env"] = env
    write_json(out / EXPORT_FILE, {
        "schema": SCHEMA,
        "format": fmt,
        "source": source,
        "weights": record,
        "exporter": {"name": info.exporter, "version": info.exporter_version, "opset": info.opset,
                     "options": info.options},
        "input": {"name": info.input_name, "layout": info.input_layout,
                  "shape": expected_input_shape(info.input_layout, size), "dtype": "float32"},
        "output": {"name": info.output_name, "num_classes": spec.num_classes},
        "preprocessing": prep.to_dict(),
        "model_facts": model_facts,
        "probe": {"file": PROBE_FILE, "batch": PROBE_BATCH, "seed": PROBE_SEED},
        "files": files,
        "seconds": {"load": t_load, "export": t_export, "probe": t_probe},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    megabytes = sum((out / name).stat().st_size for name in info.files) / 1e6
    print(f"{backend.framework} {spec.name} -> {fmt} opset {info.opset} ({megabytes:.1f} MB) in {t_export:.1f} s")


def optional_version(module: str) -> Optional[str]:
    """``module.__version__`` when it is installed (exporters record the packages they used)."""
    if importlib.util.find_spec(module) is None:
        return None
    return str(getattr(__import__(module), "__version__", None))
