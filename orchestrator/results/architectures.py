"""``manifests/architectures.yaml``: which (framework, model) names are the same architecture."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from pydantic import field_validator, model_validator

from ..errors import ManifestError
from ..manifests import Strict, validate
from ..paths import MANIFEST_DIR

ARCHITECTURES_FILE = "architectures.yaml"


class ArchitecturesManifest(Strict):
    architectures: dict[str, dict[str, Union[str, list[str]]]]

    @field_validator("architectures")
    @classmethod
    def _names_given(cls, v: dict[str, dict[str, Union[str, list[str]]]]) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for arch, frameworks in v.items():
            if not frameworks:
                raise ValueError(f"architecture {arch!r} names no framework; give FRAMEWORK: MODEL pairs")
            out[arch] = {}
            for fw, names in frameworks.items():
                names = [names] if isinstance(names, str) else names
                if not names or not all(n.strip() for n in names):
                    raise ValueError(f"{arch}.{fw}: empty model name; give the model as `predict list` names it")
                out[arch][fw] = names
        return out

    @model_validator(mode="after")
    def _each_name_once(self) -> "ArchitecturesManifest":
        seen: dict[tuple[str, str], str] = {}
        for arch, frameworks in self.architectures.items():
            for fw, names in frameworks.items():
                for name in names:
                    key = (fw.lower(), str(name).lower())
                    if key in seen and seen[key] != arch:
                        raise ValueError(f"{fw}/{name} is in both {seen[key]!r} and {arch!r}; keep it in one")
                    seen[key] = arch
        return self

    def lookup(self) -> dict[tuple[str, str], str]:
        """(framework, model), both lower case -> architecture."""
        return {(fw.lower(), str(n).lower()): arch for arch, fws in self.architectures.items()
                for fw, names in fws.items() for n in names}

    def architecture_of(self, framework: str, model: str) -> str | None:
        return self.lookup().get((framework.lower(), model.lower()))


def load_architectures(path: Path | None = None) -> ArchitecturesManifest:
    """Read and check ``path`` (default ``manifests/architectures.yaml``); errors are one ManifestError line."""
    path = Path(path) if path is not None else MANIFEST_DIR / ARCHITECTURES_FILE
    manifest = validate(path, ArchitecturesManifest)
    if not manifest.architectures:
        raise ManifestError(f"{path}: field architectures: empty; list at least one architecture")
    return manifest
