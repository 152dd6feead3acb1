"""Conversions inside a bench: before its jobs are planned, every ``SOURCE.MODEL`` its runtime images list
is converted (cached, skipped when the record matches), so ``make bench`` needs no extra command. A failed
conversion is one line and its runtime model is reported failed; the runtime images' listings come from the records,
and each runtime job mounts its source's conversions read-only and carries the record's resume key."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..bench.mounts import Bind
from ..errors import ConvertError
from ..images.manifest import ImageSpec
from .needs import conversions_of, selected, sources_needed
from .records import Conversion, checked_record, mount_target, resume_key
from .service import ConvertOutcome, convert_all


@dataclass
class BenchConversions:
    """The converted models of one bench: their records by (runtime image, model name), the runtime images' mounts."""

    records: dict[tuple[str, str], tuple[Conversion, dict[str, Any]]] = field(default_factory=dict)
    failed: list[ConvertOutcome] = field(default_factory=list)
    runtimes: set[str] = field(default_factory=set)
    wanted: dict[str, list[str]] = field(default_factory=dict)  # runtime image -> the models the profile lists

    def listing(self, image: str) -> dict[str, dict[str, Any]]:
        """What the runtime ``image``'s `predict list` shows with these conversions mounted (from the records),
        plus the other models the profile lists for it (not selected by --model, or not converted: a selected
        one of those is reported failed), so the plan checks names as for any image."""
        out = {name: {"name": name, "preprocessing": {}, "weights_files": {}} for name in self.wanted.get(image, [])}
        for (img, name), (_, record) in self.records.items():
            if img == image:
                out[name] = {"name": name, "preprocessing": record.get("preprocessing") or {},
                             "num_classes": (record.get("output") or {}).get("num_classes", 1000),
                             "weights_bundled": True, "weights_files": {}}
        return out

    def failure(self, job: Any) -> str | None:
        """Why ``job`` (of a runtime image) has no conversion to run, or None."""
        if job.image not in self.runtimes or (job.image, job.model) in self.records:
            return None
        reasons = [o.reason for o in self.failed if o.conversion.name == job.model]
        return f"conversion failed: {reasons[0] if reasons else 'not converted'}"

    def binds(self, image: str) -> tuple[tuple[str, str], ...]:
        """(source image, host folder) of every source ``image``'s conversions come from."""
        convs = {c for (img, _), (c, _) in self.records.items() if img == image}
        return tuple(sorted({(c.source, str(c.source_folder())) for c in convs}))

    def attach(self, job: Any) -> Any:
        """``job`` with its conversions mounted and its record's resume key (a job of another image unchanged)."""
        found = self.records.get((job.image, job.model))
        if found is None:
            return job
        return replace(job, converted=self.binds(job.image), conversion=resume_key(found[1]))


def converted_binds(pairs: tuple[tuple[str, str], ...]) -> list[Bind]:
    """The read-only mounts of a runtime job's conversions: each source's folder at ``/converted/<source>``."""
    return [Bind(folder, mount_target(source)) for source, folder in pairs]


def bench_conversions(client: Any, profile: Any, specs: dict[str, ImageSpec], tags: dict[str, str],
                      only: list[str] | None, weights: str | None, ensure_source: Callable[[str], None],
                      on_done: Callable[[ConvertOutcome], None]) -> BenchConversions:
    """Convert what the profile's runtime images need (building the source images first); with no engine
    here (a Slurm login node), the conversions must be in the cache already."""
    convs = conversions_of(profile, specs, tags, only, weights)
    runtimes = {n for n, s in specs.items() if s.reads}
    found = BenchConversions(runtimes=runtimes, wanted={i: list(m) for i, m in profile.models.items()
                                                         if i in runtimes and isinstance(m, list)})
    if not convs:
        return found
    if client is None:
        outcomes = [cached_only(c) for c in convs]
    else:
        for source in sources_needed(convs):
            ensure_source(source)
        outcomes = convert_all(client, convs, on_done)
    for image, wanted in profile.models.items():
        if image not in found.runtimes or not isinstance(wanted, list):
            continue
        for name in wanted:
            for o in outcomes:
                if o.conversion.name == name and o.record is not None and selected(only, image, name) and \
                        o.conversion.weights == (weights or profile.weights_for(image)):
                    found.records[(image, name)] = (o.conversion, o.record)
    found.failed = [o for o in outcomes if o.status == "failed"]
    return found


def cached_only(conv: Conversion) -> ConvertOutcome:
    """A conversion already in the cache (a host without a container engine cannot export)."""
    record = checked_record(conv)
    if record is None:
        raise ConvertError(f"{conv.describe()}: not converted and no container engine here; run `zoobench convert "
                           f"--from {conv.source} --to {conv.format} --model {conv.model} --weights {conv.weights}` on "
                           "a host with the images (the cache is shared), then again")
    return ConvertOutcome(conv, "cached", record=record)
