"""What counts as right for each prediction row: :class:`Truth` (one label, or the ReaL set) and
how top-k predictions are scored against it. Shared by labels, ReaL, ranking and compare."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Truth:
    """What counts as right for each prediction row.

    ``keep`` (N,) marks the rows that are scored; ``sets`` (n, L) holds the accepted classes of each
    kept row, padded with -1 (one column for single labels, up to 9 for ReaL).
    """

    kind: str  # "imagenet" (one label per image) or "real"
    keep: np.ndarray
    sets: np.ndarray

    @classmethod
    def single(cls, labels: np.ndarray) -> "Truth":
        labels = np.asarray(labels, dtype=np.int64)
        return cls("imagenet", np.ones(labels.shape[0], bool), labels[:, None])

    @property
    def n(self) -> int:
        """Rows scored."""
        return int(self.sets.shape[0])

    @property
    def n_images(self) -> int:
        """Rows predicted."""
        return int(self.keep.shape[0])

    def correct(self, topk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(top-1 in the set, any of the top 5 in the set) for the kept rows of ``topk`` (N x K)."""
        if topk.shape[0] != self.n_images:
            raise ValueError(f"Truth.correct: {topk.shape[0]} prediction rows for {self.n_images} labelled rows")
        top5 = np.asarray(topk)[self.keep, :5]
        hit = self.sets[:, :, None] == top5[:, None, :]  # n x L x 5
        return hit[:, :, 0].any(axis=1), hit.any(axis=(1, 2))

    def classes(self, row: int) -> list[int]:
        """The accepted classes of kept row ``row``."""
        return [int(c) for c in self.sets[row] if c >= 0]
