"""Every user error of the orchestrator: one actionable line and exit code 2.

All derive from :class:`ZoobenchError`, so ``orchestrator.cli.main`` maps the base (and the
contract's ``DataError``) to its exit code with no per-class list; a new error class only has to
derive from it. Each keeps the builtin base it always had (ValueError, RuntimeError) for callers
that catch those.
"""
from __future__ import annotations

from zoobench_contract.cli import EXIT_USAGE


class ZoobenchError(Exception):
    """A user error: its message is one line saying what to do; ``exit_code`` is what zoobench exits with."""

    exit_code = EXIT_USAGE


class BenchError(ZoobenchError, ValueError):
    """A bench cannot start as asked (unknown model, bad data...); one actionable line."""


class SlurmError(BenchError):
    """Slurm cannot be used as asked (no sbatch, a rejected submission, a live array); one line."""


class ManifestError(ZoobenchError, ValueError):
    """A manifest is missing, unparsable or invalid; the message is one actionable line."""


class ImageManifestError(ZoobenchError, ValueError):
    """manifests/images.yaml is missing or invalid, or names something that does not exist; one line."""


class ImageBuildError(ZoobenchError, RuntimeError):
    """An image (or its base, or its wheelhouse) failed to build; one line naming the full log."""


class ImageStoreError(ZoobenchError, RuntimeError):
    """An image cannot be exported or loaded (the message is one line naming the file and the fix)."""


class WeightsError(ZoobenchError, ValueError):
    """Weights that cannot be exported or imported as asked (the message is one line naming the file and the fix)."""


class EngineError(ZoobenchError, RuntimeError):
    """The Docker engine is unreachable or refused a request; one actionable line."""


class MountError(ZoobenchError, ValueError):
    """A data path that cannot be mounted into a container as it is; one line with the fix."""


class ResultsBusy(ZoobenchError, RuntimeError):
    """Another live zoobench run holds the results folder (the message names it)."""


class NotACache(ZoobenchError, RuntimeError):
    """A folder zoobench cannot prove it made; it is never removed (the message is one line)."""


class RankError(ZoobenchError, ValueError):
    """Results that cannot be ranked (the message is one line naming the run and the fix)."""


class LabelError(ZoobenchError, ValueError):
    """A prediction path without a known ImageNet label (the message is one line)."""


class ConvertError(ZoobenchError, RuntimeError):
    """A conversion that cannot be planned or used: an unknown source, a tampered converted file (one line)."""


def first_line(exc: object, default: str = "") -> str:
    """The first line of an exception's message, stripped (``default`` when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default
