"""The embedded sample set: six real, labelled photos that ship inside scikit-image and scikit-learn.

``make_sample(out)`` copies them byte for byte (no re-encoding) to ``out/<wnid>/<file>`` with a
README.md that names each source, its licence and why it got its label. It needs no network,
and a second call with nothing to change writes nothing. The set exists to smoke-test the whole
pipeline with real weights; six photos measure no accuracy.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from zoobench_contract.dataset import DataError, IMAGE_SUFFIXES
from zoobench_contract.imagenet import class_names, wnid_to_index
from zoobench_contract.outputs import atomic_write

README_TITLE = "# zoobench sample set"


@dataclass(frozen=True)
class SamplePhoto:
    dist: str  # distribution that ships the file
    module: str  # its import name
    file: str  # path inside the package
    wnid: str
    class_name: str  # must equal class_names()[wnid_to_index()[wnid]]
    licence: str
    why: str

    @property
    def relpath(self) -> str:
        return f"{self.wnid}/{Path(self.file).name}"


PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("scikit-image", "skimage", "data/chelsea.png", "n02123045", "tabby",
                "CC0, photographer Stefan van der Walt (skimage.data.chelsea docstring)",
                "Chelsea has a tawny coat striped and mottled with black and the 'M' brow of a tabby; "
                "WordNet's gloss for tabby is 'a cat with a grey or tawny coat mottled with black'. "
                "ImageNet's 'tiger cat' (n02123159, 'a cat having a striped coat') and 'Egyptian cat' "
                "(n02124075) hold near-identical photos, so models split between the three; all are "
                "fair answers."),
    SamplePhoto("scikit-image", "skimage", "data/coffee.png", "n07920052", "espresso",
                "CC0, photographer Rachel Michetti, courtesy of Pikolo Espresso Bar (skimage.data.coffee)",
                "A cup of espresso-bar coffee on a saucer; 'espresso' is the ImageNet drink class."),
    SamplePhoto("scikit-image", "skimage", "data/rocket.jpg", "n03773504", "missile",
                "public domain, SpaceX photo of Falcon 9 / DSCOVR (skimage.data.rocket docstring)",
                "A rocket on its launch pad. ImageNet has no 'rocket' class; 'missile' holds launch "
                "photos like this one ('projectile' n04008634 is the other fair answer)."),
    SamplePhoto("scikit-image", "skimage", "data/motorcycle_left.png", "n03785016", "moped",
                "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), down-sampled by "
                "scikit-image (skimage.data.stereo_motorcycle); cite the paper if you publish it",
                "A red Yamaha motorcycle. ImageNet has no 'motorcycle' class; 'moped' is the closest "
                "and the usual prediction ('motor scooter' n03791053 is the other fair answer)."),
    SamplePhoto("scikit-learn", "sklearn", "datasets/images/china.jpg", "n03877845", "palace",
                "CC BY 2.0, danielbuechele on Flickr (sklearn/datasets/images/README.txt)",
                "The Tower of Buddhist Incense of the Summer Palace, Beijing: ImageNet 'palace'."),
    SamplePhoto("scikit-learn", "sklearn", "datasets/images/flower.jpg", "n11939491", "daisy",
                "CC BY 2.0, Flickr photo 6056698931 by vultilion (sklearn/datasets/images/README.txt, "
                "whose attribution line repeats danielbuechele)",
                "A pompon dahlia. ImageNet has no dahlia; 'daisy' (the same family, Asteraceae) is "
                "its only composite-flower class."),
)


@dataclass
class SampleReport:
    out: Path
    files: list[str] = field(default_factory=list)  # relpaths of the photos, sorted
    written: list[str] = field(default_factory=list)  # files (photos or README.md) written this time
    removed: list[str] = field(default_factory=list)  # stale images from an older sample set

    def summary(self) -> str:
        changed = f"wrote {len(self.written)} file(s)" if self.written else "already up to date"
        lines = [f"sample set {self.out}: {len(self.files)} photos ({changed})"]
        lines += [f"  {rp}  {class_names()[wnid_to_index()[rp.split('/')[0]]]}" for rp in self.files]
        if self.removed:
            lines.append(f"  removed stale: {', '.join(self.removed)}")
        return "\n".join(lines)


def make_sample(out: Path) -> SampleReport:
    """Write (or confirm) the sample set in ``out``; raises :class:`DataError` on a user problem."""
    out = Path(out)
    _verify_labels()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    report = SampleReport(out, files=sorted(p.relpath for p in PHOTOS))
    _clear_stale(out, set(report.files), report)
    versions: dict[str, str] = {}
    for photo in PHOTOS:
        src = _source(photo)
        versions[photo.dist] = _version(photo.dist)
        if _write_if_changed(out / photo.relpath, src.read_bytes()):
            report.written.append(photo.relpath)
    if _write_if_changed(out / "README.md", _readme(versions).encode()):
        report.written.append("README.md")
    return report


def _verify_labels() -> None:
    names, index = class_names(), wnid_to_index()
    for photo in PHOTOS:
        got = names[index[photo.wnid]] if photo.wnid in index else None
        if got != photo.class_name:
            raise RuntimeError(f"sample photo {photo.file}: {photo.wnid} is {got!r}, not {photo.class_name!r}")


def _source(photo: SamplePhoto) -> Path:
    try:
        spec = importlib.util.find_spec(photo.module)  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{photo.dist} is not installed; it ships the sample photos (pip install {photo.dist})")
    path = Path(list(spec.submodule_search_locations)[0], photo.file)
    if not path.is_file():
        raise DataError(f"{path}: sample photo missing from the installed {photo.dist}; reinstall {photo.dist}")
    return path


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _write_if_changed(dest: Path, data: bytes) -> bool:
    if dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
        return False
    atomic_write(dest, lambda f: f.write(data))
    return True


def _clear_stale(out: Path, keep: set[str], report: SampleReport) -> None:
    """Images that are not in the set: removed when ``out`` is ours (our README), else refused."""
    if not out.is_dir():
        return
    stale = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and p.relative_to(out).as_posix() not in keep)
    if not stale:
        return
    readme = out / "README.md"
    if not (readme.is_file() and readme.read_text(errors="replace").startswith(README_TITLE)):
        raise DataError(f"{out}: already holds other images ({stale[0]}...); choose an empty or new folder")
    for rp in stale:
        (out / rp).unlink()
        report.removed.append(rp)
    for folder in sorted((p for p in out.iterdir() if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _readme(versions: dict[str, str]) -> str:
    names, index = class_names(), wnid_to_index()
    lines = [
        README_TITLE, "",
        "Six real photos that ship inside scikit-image and scikit-learn, copied byte for byte",
        "(no re-encoding) into ImageNet synset folders by `zoobench data sample`. Enough to",
        "check that a runner loads real weights and names the obvious class; too few to measure",
        "accuracy. Some photos have no exact ImageNet class: the label is the closest one,",
        "and the reason is given below.", "",
    ]
    for photo in PHOTOS:
        lines += [
            f"## {photo.relpath}", "",
            f"- source: `{photo.module}/{photo.file}` from {photo.dist} {versions.get(photo.dist, 'unknown')}",
            f"- licence: {photo.licence}",
            f"- label: {photo.wnid} ({names[index[photo.wnid]]}, class index {index[photo.wnid]})",
            f"- why: {photo.why}", "",
        ]
    return "\n".join(lines)
