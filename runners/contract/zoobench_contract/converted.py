"""Converted models as a deployment runtime's backend sees them: the records ``zoobench convert``
wrote (``convert.json``) below :data:`CONVERTED_MOUNT`, checked file by file (sha256) before use,
listed as ``SOURCE.MODEL`` with the source model's preprocessing.

The layout (the orchestrator mounts ``.cache/converted/onnx/<SOURCE>/<hash>/`` at
``/converted/<SOURCE>/``, read-only)::

    /converted/<SOURCE>/<MODEL>/<weights_dirname(W)>/{model.onnx, [model.onnx.data], probe.npz,
                                                      export.json, convert.json}

Everything a runtime backend shares lives here, framework-free (numpy only; ``onnx`` only for
:func:`onnx_initializers`), so that a runtime (ONNX Runtime, OpenVINO) is a small adapter: subclass
:class:`ConvertedBackend` and implement ``framework_version``, ``runtime_environment``,
``resolve_device``, ``configure``/``configure_mode`` and :meth:`ConvertedBackend.compile` (the
converted model file -> a callable from the model's input array to its logits). The base class lists
the models, selects and checks the record of ``--weights``, loads it (the runtime's ``compile``), runs
the probe batch, feeds NHWC or NCHW as the record says and writes run.json's ``converted`` record.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .backend import ModelSpec, UsageError, WeightsUnavailable
from .dataset import file_sha256
from .preprocessing import Preprocessing

CONVERTED_MOUNT = "/converted"  # where the orchestrator mounts the conversions cache, read-only
RECORD_FILE = "convert.json"  # written by the orchestrator beside the files of one conversion
EXPORT_FILE = "export.json"  # written by `predict export` in the source image
PROBE_FILE = "probe.npz"  # the fixed probe batch (input NHWC float32, normalised) and the source's logits
ROOT_ENV = "ZOOBENCH_CONVERTED"  # another root than CONVERTED_MOUNT (tests, a runtime run outside Docker)
FORMAT = "onnx"
SCHEMA = 1
LAYOUTS = ("NCHW", "NHWC")
HASH_SHOWN = 12  # hex digits of a sha256 an error line shows


def weights_dirname(choice: str) -> str:
    """The folder of one weights choice below a converted model (``imagenet:V1`` -> ``imagenet@V1``)."""
    return choice.replace(":", "@")


def weights_choice(dirname: str) -> str:
    """The ``--weights`` choice a folder holds (``imagenet@V1`` -> ``imagenet:V1``)."""
    return dirname.replace("@", ":", 1)


def converted_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or CONVERTED_MOUNT)


def convert_command(source: str, model: str, weights: str, force: bool = False) -> str:
    """The orchestrator command that (re)makes one conversion."""
    return (f"zoobench convert --from {source} --to {FORMAT} --model {model} --weights {weights}"
            + (" --force" if force else ""))


def container_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup v2 quota (``docker --cpus``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


@dataclass(frozen=True)
class Conversion:
    """One conversion: the record (convert.json) of one weights choice of one source model."""

    source: str  # the images.yaml name of the image that exported it (its folder below the root)
    model: str  # the source's model name
    weights: str  # the --weights choice (imagenet, imagenet:V, random)
    folder: Path
    record: dict[str, Any]
    record_sha256: str

    @property
    def name(self) -> str:
        return f"{self.source}.{self.model}"

    @property
    def layout(self) -> str:
        return self.record["input"]["layout"]

    @property
    def input_name(self) -> str | None:
        return self.record["input"].get("name")

    @property
    def output_name(self) -> str | None:
        return self.record.get("output", {}).get("name")

    @property
    def num_classes(self) -> int:
        return int(self.record.get("output", {}).get("num_classes") or 1000)

    @property
    def model_file(self) -> Path:
        """The ``.onnx`` file (its external data, ``model.onnx.data``, lies beside it)."""
        names = [n for n in self.record["files"] if n.endswith(".onnx")]
        return self.folder / (("model.onnx" if "model.onnx" in names else names[0]) if names else "model.onnx")

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.record["preprocessing"])

    @property
    def exporter(self) -> str:
        exp = self.record.get("exporter") or {}
        return " ".join(str(v) for v in (exp.get("name"), exp.get("version")) if v) or "an unknown exporter"

    @property
    def spatial(self) -> tuple[int | None, int | None]:
        """The input's fixed (H, W) from the record's shape (None where dynamic)."""
        shape = list(self.record["input"].get("shape") or [])
        if len(shape) != 4:
            return None, None
        h, w = (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])
        return (h if isinstance(h, int) else None), (w if isinstance(w, int) else None)

    def verify(self) -> None:
        """Every file of the record exists and has the sha256 convert.json names (one line else)."""
        for name, expected in sorted(self.record["files"].items()):
            path = self.folder / name
            if not path.is_file():
                raise UsageError(f"{path}: missing, convert.json lists it; the converted model changed after "
                                 f"zoobench convert; run `{convert_command(self.source, self.model, self.weights, True)}`")
            actual = file_sha256(path)
            if actual != expected:
                raise UsageError(
                    f"{path}: sha256 {actual[:HASH_SHOWN]}... does not match convert.json ({str(expected)[:HASH_SHOWN]}...); "
                    f"the converted model changed after zoobench convert; run "
                    f"`{convert_command(self.source, self.model, self.weights, True)}`")

    def probe(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe batch (NHWC float32, normalised) and the source model's logits for it."""
        path = self.folder / (self.record.get("probe") or {}).get("file", PROBE_FILE)
        try:
            with np.load(path, allow_pickle=False) as npz:
                x, logits = np.asarray(npz["input"], np.float32), np.asarray(npz["logits"], np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable probe ({type(exc).__name__}: {exc}); run "
                             f"`{convert_command(self.source, self.model, self.weights, True)}`") from None
        if x.ndim != 4 or x.shape[-1] != 3 or logits.shape != (x.shape[0], self.num_classes):
            raise UsageError(f"{path}: probe input {x.shape} / logits {logits.shape}, expected N x H x W x 3 and "
                             f"N x {self.num_classes}; run `{convert_command(self.source, self.model, self.weights, True)}`")
        return x, logits


def read_record(folder: Path, source: str, model: str, weights: str) -> Conversion:
    """The convert.json of one folder, parsed and checked (UsageError, one line, when it is not usable)."""
    path = folder / RECORD_FILE
    redo = f"run `{convert_command(source, model, weights, True)}`"
    try:
        data = path.read_bytes()
        record = json.loads(data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({type(exc).__name__}); {redo}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path}: not a JSON object; {redo}")
    problems = []
    if record.get("schema") != SCHEMA:
        problems.append(f"schema {record.get('schema')!r}, this image reads schema {SCHEMA}")
    if record.get("format") != FORMAT:
        problems.append(f"format {record.get('format')!r}, this image reads {FORMAT}")
    inp = record.get("input")
    if not isinstance(inp, dict) or inp.get("layout") not in LAYOUTS:
        problems.append(f"input.layout must be one of {', '.join(LAYOUTS)}")
    files = record.get("files")
    if not isinstance(files, dict) or not any(str(n).endswith(".onnx") for n in files):
        problems.append("files must name the .onnx file and its sha256")
    if not isinstance(record.get("preprocessing"), dict):
        problems.append("no preprocessing")
    src_model = (record.get("source") or {}).get("model") if isinstance(record.get("source"), dict) else None
    if src_model not in (None, model):
        problems.append(f"source.model is {src_model!r}, the folder is {model!r}")
    if problems:
        raise UsageError(f"{path}: {'; '.join(problems)}; {redo}")
    conv = Conversion(source, model, weights, folder, record, hashlib.sha256(data).hexdigest())
    try:
        conv.preprocessing
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: preprocessing: {exc}; {redo}") from None
    return conv


@dataclass
class Listed:
    """One converted model (``SOURCE.MODEL``) and the weights choices found for it."""

    source: str
    model: str
    folder: Path
    choices: dict[str, Path]  # --weights choice -> its folder (holding convert.json)
    spec: ModelSpec

    @property
    def name(self) -> str:
        return f"{self.source}.{self.model}"


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _preferred(choices: list[str]) -> str:
    return "imagenet" if "imagenet" in choices else next((c for c in choices if c.startswith("imagenet")), choices[0])


def scan(root: Path | None = None) -> dict[str, Listed]:
    """Every ``SOURCE.MODEL`` below ``root`` with at least one readable record, by name. A model's
    listed preprocessing, classes and weights text are those of its ``imagenet`` record (else of
    the first choice); a record that cannot be read lists no model (``predict run`` names it)."""
    root = converted_root() if root is None else root
    found: dict[str, Listed] = {}
    for src in _dirs(root):
        for mdir in _dirs(src):
            choices = {weights_choice(w.name): w for w in _dirs(mdir) if (w / RECORD_FILE).is_file()}
            if not choices:
                continue
            records = {}
            for choice in sorted(choices):
                try:
                    records[choice] = read_record(choices[choice], src.name, mdir.name, choice)
                except UsageError:
                    continue
            if not records:
                continue
            main = records[_preferred(sorted(records))]
            spec = ModelSpec(
                name=main.name, preprocessing=main.preprocessing,
                weights=f"converted from {src.name} {mdir.name} by {main.exporter}",
                weights_bundled=True, num_classes=main.num_classes,
                extra={"converted": {"source": src.name, "model": mdir.name, "weights": sorted(choices),
                                     "format": FORMAT}})
            found[main.name] = Listed(src.name, mdir.name, mdir, choices, spec)
    return dict(sorted(found.items()))


def select(listed: Listed, weights: str) -> Conversion:
    """The checked record of ``--weights`` (imagenet, imagenet:V, random): exit 2 for a weights file
    (a runtime serves converted models only), exit 4 when that choice was never converted, exit 2
    when a file changed after the conversion."""
    if weights != "random" and weights != "imagenet" and not weights.startswith("imagenet:"):
        raise UsageError(f"--weights {weights}: a runtime image serves converted models only; use imagenet, "
                         f"imagenet:VARIANT or random, each converted with `{convert_command(listed.source, listed.model, 'W')}`")
    folder = listed.folder / weights_dirname(weights)
    if not (folder / RECORD_FILE).is_file():
        have = ", ".join(sorted(listed.choices)) or "none"
        raise WeightsUnavailable(
            f"{listed.name}: --weights {weights} was not converted ({folder} has no {RECORD_FILE}; converted: {have}); "
            f"run `{convert_command(listed.source, listed.model, weights)}`")
    conv = read_record(folder, listed.source, listed.model, weights)
    conv.verify()
    return conv


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """NHWC float32 (what the contract hands a backend) -> the model's input layout, contiguous."""
    if layout == "NCHW":
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    if layout == "NHWC":
        return np.ascontiguousarray(batch, dtype=np.float32)
    raise ValueError(f"input layout {layout!r}: expected one of {', '.join(LAYOUTS)}")


def source_facts(record: dict[str, Any], spec: ModelSpec, crop_size: int) -> dict[str, Any]:
    """The record's ``model_facts`` (counted by the source framework before the conversion), the
    counters saying so; MACs are dropped with the reason when this run's input size differs."""
    facts = record.get("model_facts")
    source = (record.get("source") or {}).get("framework", "the source")
    if not isinstance(facts, dict):
        return {"params": None, "macs": None, "why": f"the conversion record has no model_facts of {source}"}
    note = f" (counted by {source} before the ONNX conversion)"
    params = dict(facts["params"]) if isinstance(facts.get("params"), dict) else None
    if params is not None:
        params["counter"] = f"{params.get('counter')}{note}"
    macs = dict(facts["macs"]) if isinstance(facts.get("macs"), dict) else None
    if macs is not None:
        macs["counter"] = f"{macs.get('counter')}{note}"
        if macs.get("input_size") not in (None, [crop_size, crop_size]):
            macs.update(value=None, input_size=[crop_size, crop_size],
                        why=f"{source} counted the MACs at input {facts['macs']['input_size']}, this run uses "
                            f"{crop_size}x{crop_size}")
    return {"params": params, "macs": macs, "why": facts.get("why")}


def onnx_initializers(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every weight of an ONNX file (graph initializers, then Constant node tensors, in graph order)
    as (name, array), external data included; read with the ``onnx`` package."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path), load_external_data=True)
    for init in proto.graph.initializer:
        yield init.name, numpy_helper.to_array(init)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield f"{node.output[0]}:{attr.name}", numpy_helper.to_array(attr.t)


@dataclass
class Loaded:
    """A converted model compiled by a runtime: what ``load`` returns, ``predict`` takes."""

    conversion: Conversion
    run: Callable[[np.ndarray], np.ndarray]  # the model's input (its layout) -> logits
    device: str
    probe_max_abs_logit_diff: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ConvertedBackend:
    """The shared part of a runtime backend serving converted (ONNX) models. A subclass sets
    ``framework`` and implements :meth:`compile` (plus ``framework_version``, ``runtime_environment``,
    ``resolve_device``, optional ``configure``/``modes``/``configure_mode``)."""

    framework = "converted"
    root: Path | None = None  # None: $ZOOBENCH_CONVERTED or /converted

    # ----------------------------------------------------------- what a runtime implements
    def compile(self, conversion: Conversion, device: str) -> Callable[[np.ndarray], np.ndarray]:
        """The converted model file -> a callable from its input (the record's layout) to its logits."""
        raise NotImplementedError

    def runtime_environment(self) -> dict[str, Any]:
        return {}

    def effective_settings(self, loaded: Loaded) -> None:
        """After compile: update the precision/mode settings dicts configure() returned (optional)."""

    # ----------------------------------------------------------- the contract, shared
    def _listing(self) -> dict[str, Listed]:
        if getattr(self, "_scanned", None) is None:
            self._scanned = scan(self.root)
        return self._scanned

    def _listed(self, spec: ModelSpec) -> Listed:
        listed = self._listing().get(spec.name)
        if listed is None:
            raise UsageError(f"unknown converted model {spec.name!r}")
        return listed

    def models(self) -> list[ModelSpec]:
        return [item.spec for item in self._listing().values()]

    def environment(self) -> dict[str, Any]:
        root = converted_root() if self.root is None else self.root
        return {**self.runtime_environment(), "converted_root": str(root),
                "converted_models": len(self._listing()), "reads": FORMAT}

    def preprocessing_for(self, spec: ModelSpec, weights: str) -> Preprocessing:
        """The preprocessing of the record ``weights`` selects (a variant's own, when converted)."""
        listed = self._listing().get(spec.name)
        folder = listed.choices.get(weights) if listed is not None else None
        if folder is None:
            return spec.preprocessing
        try:
            return read_record(folder, listed.source, listed.model, weights).preprocessing
        except UsageError:
            return spec.preprocessing  # load() names the broken record

    def fetch_weights(self, spec: ModelSpec, weights: str = "imagenet") -> str:
        return "bundled in the conversions cache (zoobench convert)"

    def facts_weights(self, spec: ModelSpec) -> str:
        """The weights ``predict facts`` can build this model with: any converted choice (the
        architecture, hence the facts, is the same), random when converted."""
        choices = sorted(self._listed(spec).choices)
        return "random" if "random" in choices else _preferred(choices)

    def load(self, spec: ModelSpec, weights: str, device: str) -> Loaded:
        conv = select(self._listed(spec), weights)
        loaded = Loaded(conv, self.compile(conv, device), device)
        x, expected = conv.probe()
        got = self.predict(loaded, x)
        if got.shape != expected.shape:
            raise UsageError(f"{conv.model_file}: the probe gives logits {got.shape}, the source gave {expected.shape}; "
                             f"run `{convert_command(conv.source, conv.model, weights, True)}`")
        loaded.probe_max_abs_logit_diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        self.effective_settings(loaded)
        self._last = loaded
        return loaded

    def weights_path(self, spec: ModelSpec, weights: str) -> str | None:
        listed = self._listing().get(spec.name)
        if listed is None:
            return None
        return str(listed.folder / weights_dirname(weights) / self._model_file_name(listed, weights))

    @staticmethod
    def _model_file_name(listed: Listed, weights: str) -> str:
        try:
            conv = read_record(listed.folder / weights_dirname(weights), listed.source, listed.model, weights)
            return conv.model_file.name
        except UsageError:
            return "model.onnx"

    def predict(self, model: Loaded, batch: np.ndarray) -> np.ndarray:
        conv = model.conversion
        h, w = conv.spatial
        if (h and h != batch.shape[1]) or (w and w != batch.shape[2]):
            raise UsageError(f"{conv.name}: the converted model takes {h}x{w} input, this batch is "
                             f"{batch.shape[1]}x{batch.shape[2]}; keep the crop size of the record's preprocessing")
        out = np.asarray(model.run(to_layout(batch, conv.layout)))
        return out.astype(np.float32, copy=False).reshape(batch.shape[0], -1)

    def state_arrays(self, model: Loaded) -> Iterator[tuple[str, np.ndarray]]:
        """The ONNX file's weights (what the runtime compiled), read again from the checked file."""
        return onnx_initializers(model.conversion.model_file)

    def model_facts(self, model: Loaded, spec: ModelSpec, crop_size: int) -> dict[str, Any]:
        return source_facts(model.conversion.record, spec, crop_size)

    def converted_record(self, model: Loaded) -> dict[str, Any]:
        """run.json's ``converted``: which conversion ran and how close it came to the source on the probe."""
        rec = model.conversion.record
        source = {k: v for k, v in (rec.get("source") or {}).items() if k != "env"}
        return {"record_sha256": model.conversion.record_sha256, "source": source, "weights": rec.get("weights"),
                "exporter": rec.get("exporter"), "format": rec.get("format", FORMAT),
                "folder": str(model.conversion.folder), "input_layout": model.conversion.layout,
                "probe": {"batch": int((rec.get("probe") or {}).get("batch", 2)),
                          "max_abs_logit_diff": model.probe_max_abs_logit_diff}}
