"""K-fold cross-validation folds that keep each group (subject) in one fold.

`grouped_folds` deals whole groups to folds: the groups are put in a seeded random order, then,
with ``strata`` (e.g. the class of each case), ordered by their stratum (the most frequent one of
their cases; ties to the smaller), so that dealing them round-robin spreads every stratum over the
folds. Two cases of one group (sessions of one subject) are never in two folds, so a probe is
never scored on a subject it was fitted on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["grouped_folds"]


def grouped_folds(groups: Sequence[str], k: int, *, seed: int = 0, strata: Sequence[object] | None = None
                  ) -> np.ndarray:
    """Fold index [N] in ``[0, k)`` of each case, given its group (subject) ``groups`` [N]. ``k`` is
    lowered to the number of groups; fewer than 2 groups, or k < 2, is an error (nothing to hold out)."""
    groups = [str(g) for g in groups]
    names = list(dict.fromkeys(groups))
    if k < 2:
        raise ValueError(f"folds={k}: cross-validation needs at least 2 folds")
    if len(names) < 2:
        raise ValueError(f"{len(groups)} case(s) of {len(names)} subject(s): cross-validation needs at least 2 subjects")
    k = min(k, len(names))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    if strata is not None:
        if len(strata) != len(groups):
            raise ValueError(f"strata must have one entry per case ({len(groups)}), got {len(strata)}")
        by_group: dict[str, Counter] = {}
        for g, s in zip(groups, strata):
            by_group.setdefault(g, Counter())[s] += 1
        stratum = {g: min(c, key=lambda s: (-c[s], str(s))) for g, c in by_group.items()}
        order.sort(key=lambda g: str(stratum[g]))  # stable: the random order within each stratum stays
    fold_of = {g: i % k for i, g in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)
