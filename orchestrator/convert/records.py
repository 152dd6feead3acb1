"""The conversions cache, spelled once: where one conversion lives, what its record says, and whether
its files are still the ones the record names (sha256). Nothing here starts a container.

``CONVERTED_CACHE/<format>/<source image>/<source tag's variant-hash>/<model>/<weights dir>/`` holds
the exported files, ``export.json`` (from the source image) and, last, ``convert.json``; a runtime
container sees ``.../<source tag's variant-hash>/`` read-only at ``/converted/<source image>/``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoobench_contract.converted import CONVERTED_MOUNT, EXPORT_FILE, RECORD_FILE, weights_dirname
from zoobench_contract.dataset import file_sha256

from ..errors import ConvertError
from ..paths import CONVERTED_CACHE

RECORD_SCHEMA = 1


@dataclass(frozen=True)
class Conversion:
    """One model of one source image tag, exported to ``format`` with one weights choice."""

    source: str  # the images.yaml name of the exporting image
    tag: str  # its content-hash tag
    model: str
    weights: str  # imagenet | imagenet:VARIANT | random
    format: str = "onnx"

    @property
    def name(self) -> str:
        """The model's name in a runtime image: ``SOURCE.MODEL``."""
        return f"{self.source}.{self.model}"

    def source_folder(self, root: Path = CONVERTED_CACHE) -> Path:
        """What a runtime container gets at ``/converted/<source>``: every conversion of this source tag."""
        return root / self.format / self.source / self.tag.rsplit(":", 1)[-1]

    def folder(self, root: Path = CONVERTED_CACHE) -> Path:
        return self.source_folder(root) / self.model / weights_dirname(self.weights)

    def describe(self) -> str:
        return f"{self.source} {self.model} ({self.weights}) -> {self.format}"


def mount_target(source: str) -> str:
    """Where a runtime container sees the conversions of ``source``."""
    return f"{CONVERTED_MOUNT}/{source}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``convert.json`` of a conversion folder (None: not converted, or an unfinished conversion)."""
    return read_json(folder / RECORD_FILE)


def file_problem(folder: Path, files: dict[str, Any], what: str) -> str | None:
    """The first file ``files`` (name -> sha256) names that is missing or changed, as one line; None if all match."""
    if not files:
        return f"{folder / what}: names no files; convert again with --force"
    for name, expected in sorted(files.items()):
        path = folder / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return f"{path}: missing (named by {what}); convert again with --force"
        found = file_sha256(path)
        if found != expected:
            return (f"{path}: sha256 {found[:12]}... does not match {what} ({str(expected)[:12]}...); the converted "
                    "model changed after `zoobench convert`; convert again with --force")
    return None


def checked_record(conv: Conversion, root: Path = CONVERTED_CACHE) -> dict[str, Any] | None:
    """The record of ``conv`` when it is complete and every file still matches it; None when it was never
    (fully) converted; ConvertError (one line) when a file was changed since."""
    folder = conv.folder(root)
    record = read_record(folder)
    if record is None:
        return None
    problem = file_problem(folder, record.get("files") or {}, RECORD_FILE)
    if problem:
        raise ConvertError(f"{conv.describe()}: {problem} (`zoobench convert --from {conv.source} --to {conv.format} "
                           f"--model {conv.model} --weights {conv.weights} --force`)")
    return record


def is_current(record: dict[str, Any], image_id: str, weights_sha256: str | None) -> bool:
    """Whether a record was made by this very image (id) from these very weights (sha256, when known)."""
    source, weights = record.get("source") or {}, record.get("weights") or {}
    if record.get("schema") != RECORD_SCHEMA or source.get("image_id") != image_id:
        return False
    return weights_sha256 is None or weights.get("sha256") in (None, weights_sha256)


def resume_key(record: dict[str, Any]) -> dict[str, Any]:
    """What a runtime run made from this conversion must match to be reused: the source image id, the
    weights' sha256, the exporter and its version, the opset and every converted file's sha256."""
    source, exporter = record.get("source") or {}, record.get("exporter") or {}
    return {"source": source.get("image"), "source_image_id": source.get("image_id"), "model": source.get("model"),
            "weights": (record.get("weights") or {}).get("requested"),
            "weights_sha256": (record.get("weights") or {}).get("sha256"),
            "exporter": exporter.get("name"), "exporter_version": exporter.get("version"),
            "opset": exporter.get("opset"), "format": record.get("format"), "files": record.get("files")}


def export_file(folder: Path) -> Path:
    return folder / EXPORT_FILE
