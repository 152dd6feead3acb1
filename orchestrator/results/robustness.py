"""Robustness of the runs of a results folder: every run of a shifted set (one whose manifest entry
names a ``clean`` set: ImageNet-V2, -R, -A, -Sketch, -C) paired with its clean run, the run of that
clean set with the same framework, model, weights kind and precision.

Accuracy sets: clean and shifted Acc@1, the drop (clean - shifted, in points) and each model's rank on
both among the paired models. For -R/-A the clean set is imagenet-r-clean / imagenet-a-clean (the val
images of their 200 classes, scored with the same restriction: timm's "clean"); without that run the
model's imagenet-val run stands in, and a note says its Acc@1 is over 1000 classes, not comparable.

ImageNet-C (scoring ``corruption``; Hendrycks & Dietterich, ICLR 2019): the error E = 1 - Acc@1 per
corruption c and severity s (from the path prefix ``<c>/<s>/``); CE_c = mean_s E_{s,c} / AlexNet's
mean_s E_{s,c}; mCE = mean of CE_c over the 15 benchmark corruptions (over those present, labelled
partial, when some are missing); relative CE_c = (mean_s E_{s,c} - E_clean) / (AlexNet's - AlexNet's
E_clean) and relative mCE its mean. Extra corruptions get errors, never a CE. A generated set is
labelled so everywhere: its mCE is not comparable with the published one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from ..errors import RankError
from .labels import Labels
from .records import EvalSet, ModelResult
from .stats import competition_rank

# AlexNet's error on each benchmark corruption, averaged over the 5 severities: google-research/augmix
# imagenet.py ALEXNET_ERR ("Raw AlexNet errors taken from https://github.com/hendrycks/robustness"),
# the same to 3 places as Appendix C of Hendrycks & Dietterich, ICLR 2019 (google-research/
# robustness_metrics, reports/imagenet_variants.py ALEXENET_AVERAGE_ERRORS). In AugMix's order.
ALEXNET_ERR: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816,
    "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
BENCHMARK = tuple(ALEXNET_ERR)  # the 15 corruptions of mCE
# AlexNet's clean top-1 error on ImageNet val, the relative mCE's baseline: 0.4348 in google-research/
# robustness_metrics reports/imagenet_variants.py (ALEXNET_AVERAGE_ERR_CLEAN, "from Appendix C" of the
# paper; its Table 1 rounds it to 43.5%); torchvision's AlexNet weights score 56.522% top-1, i.e. 43.478%.
ALEXNET_CLEAN_ERR = 0.4348
GENERATED_NOTE = "generated set: not comparable with published mCE"


@dataclass(frozen=True)
class Identity:
    """What pairs a shifted run with its clean run."""

    framework: str
    model: str
    weights: str
    precision: str

    @classmethod
    def of(cls, r: ModelResult) -> "Identity":
        return cls(r.framework, r.model, r.weights, r.precision)

    @property
    def label(self) -> str:
        """``pytorch resnet50``, with the weights and precision when they are not imagenet and fp32."""
        extra = [x for x, usual in ((self.weights, "imagenet"), (self.precision, "fp32")) if x != usual]
        return " ".join([self.framework, self.model] + extra)

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class Clean:
    """The clean run a shifted run is paired with; ``fallback``: the default set's run stood in."""

    run: str
    dataset: str
    acc1: float
    n: int
    fallback: bool = False

    @property
    def error(self) -> float:
        return 1.0 - self.acc1


@dataclass
class AccuracyRow:
    identity: Identity
    run: str
    n: int
    acc1: float  # on the shifted set
    clean: Clean | None
    clean_rank: int | None = None  # among the paired rows of the set
    shifted_rank: int | None = None

    @property
    def drop(self) -> float | None:
        """Clean minus shifted Acc@1 (a fraction; points when times 100)."""
        return None if self.clean is None else self.clean.acc1 - self.acc1

    @property
    def rank_change(self) -> int | None:
        """Places gained on the shifted set (positive: higher there than on clean)."""
        return None if self.clean_rank is None or self.shifted_rank is None else self.clean_rank - self.shifted_rank


@dataclass
class AccuracySet:
    eval_set: EvalSet
    rows: list[AccuracyRow]
    notes: list[str] = field(default_factory=list)
    fit: tuple[float, float] | None = None  # probit(shifted) = a * probit(clean) + b over the paired rows

    def effective(self, row: AccuracyRow) -> float | None:
        """Effective robustness (Taori et al. 2020): shifted Acc@1 minus what the set's fit predicts from clean."""
        from scipy.stats import norm

        if self.fit is None or row.clean is None:
            return None
        a, b = self.fit
        return float(row.acc1 - norm.cdf(a * norm.ppf(np.clip(row.clean.acc1, 1e-4, 1 - 1e-4)) + b))


@dataclass
class CorruptionRow:
    identity: Identity
    run: str
    clean: Clean | None
    errors: dict[str, dict[int, float]]  # corruption -> severity -> E
    corruption_error: dict[str, float]  # mean over severities
    severity_error: dict[int, float]  # mean over the benchmark corruptions present
    ce: dict[str, float]  # benchmark corruptions only
    relative_ce: dict[str, float]  # needs the clean run
    mce: float | None
    relative_mce: float | None


@dataclass
class CorruptionSet:
    eval_set: EvalSet
    corruptions: list[str]  # the benchmark ones present, in AlexNet's order
    extra: list[str]
    severities: list[int]
    complete: bool  # all 15 benchmark corruptions at every severity: the mCE is the benchmark's
    rows: list[CorruptionRow]
    notes: list[str] = field(default_factory=list)

    @property
    def mce_label(self) -> str:
        if self.complete:
            return "mCE"
        return f"partial mCE ({len(self.corruptions)} of {len(BENCHMARK)} corruptions)"


@dataclass
class Robustness:
    accuracy: list[AccuracySet] = field(default_factory=list)
    corruption: list[CorruptionSet] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.accuracy or self.corruption)


# ---------------------------------------------------------------- pairing

CleanIndex = dict[tuple[str, Identity], list[ModelResult]]


def clean_index(results: list[ModelResult]) -> CleanIndex:
    """The official (never generated) runs by (set name, identity): where clean runs are looked up."""
    index: CleanIndex = {}
    for r in results:
        if not r.eval_set.generated:
            index.setdefault((r.eval_set.name, Identity.of(r)), []).append(r)
    return index


def default_name(results: list[ModelResult]) -> str | None:
    return next((r.eval_set.name for r in results if r.eval_set.default and not r.eval_set.generated), None)


def find_clean(r: ModelResult, index: CleanIndex, default: str | None) -> Clean | None:
    """The clean run of ``r``: of its set's clean set, else (a class-subset clean set missing) the default set's."""
    want, ident = r.eval_set.clean, Identity.of(r)
    found = index.get((want or "", ident))
    fallback = not found and default is not None and want != default
    if fallback:
        found = index.get((default or "", ident))
    if not found:
        return None
    c = sorted(found, key=lambda x: x.run)[0]
    return Clean(c.run, c.eval_set.name, c.acc1, c.n, bool(fallback))


def pairing_notes(s: EvalSet, cleans: list[tuple[Identity, Clean | None]]) -> list[str]:
    """One note for the models without a clean run, one for those whose clean run is the default set's."""
    notes = []
    missing = [i.label for i, c in cleans if c is None]
    fallback = [i.label for i, c in cleans if c is not None and c.fallback]
    if missing:
        notes.append(f"{s.label}: no {s.clean} run for {len(missing)} model(s) (e.g. {missing[0]}): no clean "
                     f"Acc@1, no drop; `zoobench run --dataset {s.clean}` adds it")
    if fallback:
        notes.append(f"{s.label}: no {s.clean} run for {len(fallback)} model(s) (e.g. {fallback[0]}): their "
                     f"clean Acc@1 (marked †) is the imagenet-val run's, over 1000 classes, not comparable with "
                     f"timm's {s.clean} (the set's classes only); `zoobench run --dataset {s.clean}` adds it")
    return notes


# ---------------------------------------------------------------- accuracy sets

def probit_fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(a, b) of probit(y) = a * probit(x) + b by least squares; None with under two distinct x."""
    from scipy.stats import norm

    if len({x for x, _ in points}) < 2:
        return None
    x, y = (norm.ppf(np.clip(np.array(v, dtype=np.float64), 1e-4, 1 - 1e-4)) for v in zip(*points))
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def accuracy_set(s: EvalSet, members: list[ModelResult], index: CleanIndex, default: str | None) -> AccuracySet:
    rows = [AccuracyRow(Identity.of(r), r.run, r.n, r.acc1, find_clean(r, index, default)) for r in members]
    paired = [row for row in rows if row.clean is not None]
    for rank, row in zip(competition_rank([row.clean.acc1 for row in paired]), paired):  # type: ignore[union-attr]
        row.clean_rank = rank
    for rank, row in zip(competition_rank([row.acc1 for row in paired]), paired):
        row.shifted_rank = rank
    rows.sort(key=lambda row: (-row.acc1, row.identity.label, row.run))
    notes = pairing_notes(s, [(row.identity, row.clean) for row in rows])
    if s.generated:
        notes.insert(0, f"{s.label}: generated set, not comparable with published numbers")
    fit = probit_fit([(row.clean.acc1, row.acc1) for row in paired])  # type: ignore[union-attr]
    return AccuracySet(s, rows, notes, fit)


# ---------------------------------------------------------------- ImageNet-C

def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def corruption_row(r: ModelResult, clean: Clean | None, benchmark: list[str]) -> CorruptionRow:
    errors: dict[str, dict[int, float]] = {}
    for (c, sev), (right, n) in sorted(r.by_corruption.items()):
        if n:
            errors.setdefault(c, {})[sev] = 1.0 - right / n
    mean = {c: float(np.mean(list(by_sev.values()))) for c, by_sev in errors.items()}
    severities = sorted({sev for by_sev in errors.values() for sev in by_sev})
    per_severity = {sev: _mean([errors[c][sev] for c in benchmark if sev in errors.get(c, {})]) for sev in severities}
    ce = {c: mean[c] / ALEXNET_ERR[c] for c in benchmark if c in mean}
    relative = {} if clean is None else \
        {c: (mean[c] - clean.error) / (ALEXNET_ERR[c] - ALEXNET_CLEAN_ERR) for c in benchmark if c in mean}
    return CorruptionRow(Identity.of(r), r.run, clean, errors, mean,
                         {s: v for s, v in per_severity.items() if v is not None}, ce, relative,
                         _mean(list(ce.values())), _mean(list(relative.values())))


def corruption_set(s: EvalSet, members: list[ModelResult], index: CleanIndex, default: str | None) -> CorruptionSet:
    cells = {key for r in members for key, (_, n) in r.by_corruption.items() if n}
    present = {c for c, _ in cells}
    benchmark = [c for c in BENCHMARK if c in present]
    extra = sorted(present - set(BENCHMARK))
    severities = sorted({sev for _, sev in cells})
    expected = list(range(1, (s.severities or max(severities, default=0)) + 1))
    complete = len(benchmark) == len(BENCHMARK) and all((c, sev) in cells for c in BENCHMARK for sev in expected)
    rows = [corruption_row(r, find_clean(r, index, default), benchmark) for r in members]
    rows.sort(key=lambda row: (row.mce is None, row.mce or 0.0, row.identity.label, row.run))
    notes = [f"{s.label}: {GENERATED_NOTE}"] if s.generated else []
    if not complete:
        missing = [c for c in BENCHMARK if c not in present]
        notes.append(f"{s.label}: partial mCE over {len(benchmark)} of {len(BENCHMARK)} benchmark corruptions"
                     + (f" (missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})" if missing else
                        f" (not every severity 1..{len(expected)} present)") + "; not the benchmark's mCE")
    if extra:
        notes.append(f"{s.label}: extra corruptions ({', '.join(extra)}) have errors but no CE and are not in mCE")
    notes += pairing_notes(s, [(row.identity, row.clean) for row in rows])
    return CorruptionSet(s, benchmark, extra, severities, complete, rows, notes)


# ---------------------------------------------------------------- the whole folder

def robustness(results: list[ModelResult]) -> Robustness:
    """The robustness of every shifted set among ``results`` (scored runs of any sets, see
    :func:`.ranking.load_results`), in their order; empty when there is no shifted set."""
    index, default = clean_index(results), default_name(results)
    groups: dict[tuple[str, bool], list[ModelResult]] = {}
    for r in results:
        if r.eval_set.shifted:
            groups.setdefault(r.eval_set.key, []).append(r)
    out = Robustness()
    for members in groups.values():
        s = members[0].eval_set
        if s.scoring == "corruption":
            out.corruption.append(corruption_set(s, members, index, default))
        else:
            out.accuracy.append(accuracy_set(s, members, index, default))
    out.notes = [n for group in (*out.accuracy, *out.corruption) for n in group.notes]
    return out


def load_robustness(results_dir: Path, labels: Labels = None, mixed_precision: bool = False,
                    manifests: Path | None = None) -> tuple[Robustness, list[str]]:
    """Score RESULTS_DIR and pair its runs; a one-line :class:`RankError` when it holds no shifted set."""
    from .evalsets import manifest
    from .ranking import load_results

    results, notes = load_results(Path(results_dir), labels, mixed_precision, manifests=manifests)
    rob = robustness(results)
    if rob.empty:
        shifted = [n for n, d in manifest(manifests).datasets.items() if d.clean is not None]
        held = sorted({r.eval_set.label for r in results})
        raise RankError(f"no runs of a shifted set ({', '.join(shifted)}) in {results_dir} (it holds "
                        f"{', '.join(held)}); run `zoobench run --dataset imagenet-r` (or another of them) first")
    return rob, notes

