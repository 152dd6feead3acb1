"""Run conversions: ``predict export`` in the source image, in a locked-down container like any run
(no network, weights read-only, only its own output folder writable), checked and published atomically
into the conversions cache. A conversion whose record still matches (same source image id, same weights
sha256, same opset, every file unchanged) is skipped; a failed one is one line with the exporter's
reason and the others go on; a converted file changed since is refused (one line)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterator

from zoobench_contract.converted import EXPORT_FILE, RECORD_FILE
from zoobench_contract.dataset import file_sha256
from zoobench_contract.outputs import write_json

from ..bench import containers, imagefacts
from ..errors import ConvertError
from ..paths import CONVERTED_CACHE, LOGS, WEIGHTS_CACHE
from .records import RECORD_SCHEMA, Conversion, checked_record, file_problem, is_current, read_json

EXPORT_TIMEOUT_S = 1800  # the largest model's build and export on a CPU
DEFAULT_OPSET = 17


@dataclass
class ConvertOutcome:
    """What became of one conversion: ``converted``, ``cached`` or ``failed`` (with the reason)."""

    conversion: Conversion
    status: str
    reason: str = ""
    seconds: float = 0.0
    record: dict[str, Any] | None = field(default=None, repr=False)
    log: str | None = None

    @property
    def size_bytes(self) -> int:
        folder = self.conversion.folder()
        return sum((folder / n).stat().st_size for n in (self.record or {}).get("files", {}) if (folder / n).is_file())

    def line(self) -> str:
        c = self.conversion
        if self.status == "failed":
            return f"{c.describe()}: failed: {self.reason}" + (f" (log: {self.log})" if self.log else "")
        what = f"converted in {self.seconds:.1f} s" if self.status == "converted" else "cached (the record matches)"
        exporter = (self.record or {}).get("exporter") or {}
        return (f"{c.describe()}: {what}, {exporter.get('name')} {exporter.get('version')} opset "
                f"{exporter.get('opset')}, {self.size_bytes / 1e6:.1f} MB -> {c.folder()}")


def zoobench_version() -> str | None:
    try:
        return version("zoobench")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One conversion of a source tag's folder at a time, across processes (a lock on the folder itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def source_weights_sha256(client: Any, conv: Conversion) -> str | None:
    """The sha256 of the weights file the source image reads for ``conv.weights`` (None: bundled in the image,
    random, or not known), so a changed weights cache makes a new conversion."""
    listing = imagefacts.served_models(client, conv.tag).get(conv.model)
    if listing is None:
        raise ConvertError(f"{conv.describe()}: the {conv.source} image serves no model {conv.model!r}; "
                           f"`zoobench models {conv.source}` lists its models")
    files = listing.get("weights_files") or {}
    rel = files.get(conv.weights) if isinstance(files, dict) and not listing.get("weights_bundled") else None
    path = WEIGHTS_CACHE / rel if isinstance(rel, str) else None
    return file_sha256(path) if path is not None and path.is_file() else None


def export_args(conv: Conversion, opset: int) -> list[str]:
    return ["export", "--model", conv.model, "--weights", conv.weights, "--format", conv.format,
            "--opset", str(opset), "--out", "/out"]


def publish(partial: Path, final: Path) -> None:
    """Swap ``partial`` into place (the previous conversion, if any, removed after the rename). Both work
    folders are dot-named: a runtime container lists no weights choice from them, even one left by a kill."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def record_of(partial: Path, conv: Conversion, image_id: str) -> dict[str, Any]:
    """``convert.json``: the source image's export.json, checked file by file, with the source image's
    name and id (which only the host knows) and zoobench's version."""
    export = read_json(partial / EXPORT_FILE)
    if export is None:
        raise ConvertError(f"{conv.describe()}: the export wrote no readable {EXPORT_FILE}; see the log")
    problem = file_problem(partial, export.get("files") or {}, EXPORT_FILE)
    if problem:
        raise ConvertError(f"{conv.describe()}: {problem}")
    source = {**(export.get("source") or {}), "image": conv.source, "tag": conv.tag, "image_id": image_id}
    return {**export, "schema": RECORD_SCHEMA, "source": source, "zoobench": zoobench_version(),
            "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def convert_one(client: Any, conv: Conversion, force: bool = False, opset: int = DEFAULT_OPSET,
                timeout_s: float = EXPORT_TIMEOUT_S) -> ConvertOutcome:
    """Export ``conv`` unless its record matches; ConvertError for a tampered cache or an unknown model."""
    image_id = imagefacts.image_id(client, conv.tag)
    weights_sha = source_weights_sha256(client, conv)
    final = conv.folder(CONVERTED_CACHE)
    with locked(final.parent):
        record = None if force else checked_record(conv)
        if (record is not None and not force and is_current(record, image_id, weights_sha)
                and (record.get("exporter") or {}).get("opset") == opset):
            return ConvertOutcome(conv, "cached", record=record)
        partial = final.with_name(f".{final.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log = LOGS / "convert" / f"{conv.source}-{conv.model}-{final.name}.log"
        try:
            with containers.handed_over(partial):
                result = containers.predict_in_container(
                    client, conv.tag, export_args(conv, opset), [], partial, WEIGHTS_CACHE, log, timeout_s,
                    environment={"ZOOBENCH_IMAGE_ID": image_id, "ZOOBENCH_IMAGE_TAG": conv.tag},
                    labels={containers.LABEL_ROLE: "convert"})
            if result.exit_code != 0:
                return ConvertOutcome(conv, "failed", result.reason, result.seconds, log=str(log))
            record = record_of(partial, conv, image_id)
            write_json(partial / RECORD_FILE, record)
            publish(partial, final)
            return ConvertOutcome(conv, "converted", seconds=result.seconds, record=record, log=str(log))
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def convert_all(client: Any, conversions: list[Conversion], on_done: Callable[[ConvertOutcome], None],
                force: bool = False, opset: int = DEFAULT_OPSET) -> list[ConvertOutcome]:
    """Every conversion in turn; one that fails (the exporter's reason, or a converted file changed since:
    nothing is overwritten without --force) does not stop the others."""
    outcomes = []
    for conv in conversions:
        try:
            outcome = convert_one(client, conv, force, opset)
        except ConvertError as exc:
            outcome = ConvertOutcome(conv, "failed", str(exc).split(": ", 1)[-1])
        on_done(outcome)
        outcomes.append(outcome)
    return outcomes
