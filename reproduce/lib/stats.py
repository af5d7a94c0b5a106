"""Paired statistics over seeds, and the verdict rules of a claim.

A claim compares two rows of one script (row A vs row B, e.g. MaskedKD 50% vs logit KD) over the same seeds. Same
seed = same student initialisation and same data order in every row: `train.run` draws the student from
`init_params(model, seed=cfg.seed)` and seeds torch with `cfg.seed * 1000 + rank`, and `DigitsData` draws its
images from `cfg.seed * 100_003 + draw` and its batch order from `cfg.seed * 7919 + epoch`; the rows of table 1
differ only in what the teacher sees (tests/test_claims.py checks this). So the per-seed difference A - B is a
paired difference, and the statistics below are over those differences:

    d_i = 100 (acc_A(seed i) - acc_B(seed i))   points, one per seed present in both rows
    mean, SD (n - 1 in the denominator), 95% CI = mean +- t_{0.975, n-1} SD / sqrt(n)   (Student t, scipy)

Verdict rules (strict inequalities; with one seed there is no interval and every verdict is "inconclusive"):
- "beats" (A is above B): holds if the CI lies above 0; does not hold if it lies below 0; inconclusive otherwise.
- "below" (A is below B): holds if the CI lies below 0; does not hold if it lies above 0; inconclusive otherwise.
- "matches" (A is level with B): an equivalence test with margin MARGIN points: holds if the CI lies within
  (-MARGIN, +MARGIN); does not hold if it lies entirely outside [-MARGIN, +MARGIN]; inconclusive otherwise.
- "noninferior" (A is at least level with B, up to MARGIN): a non-inferiority test with the same margin: holds if
  the CI lies above -MARGIN; does not hold if it lies below -MARGIN; inconclusive otherwise.
A "matches" verdict from a 95% interval is a conservative equivalence test (two one-sided tests at 2.5% each; the
usual TOST at 5% would use a 90% interval), and there is no correction for the number of claims: with about twenty
claims, one verdict may be a chance result. An inconclusive verdict says what would settle it: the smallest number of
seeds at which the CI, if the observed
mean and SD stayed as they are, would fall on one side (`seeds_to_settle`).

MARGIN = 2 points is our choice, anchored on the paper: its "matches" rows differ from their logit-KD row by at
most 0.3 points on ImageNet (docs/paper.md#table-1), a tenth of the 3.0 points that
distillation adds there (DeiT-Ti 72.0 -> 75.0). Distillation adds about 10 points at embedded scale (table 1), a
tenth of which is 1 point; we allow twice that because the embedded test set (2000 images, accuracy near 50%) has
a sampling SE of 1.1 points per run, so a 1-point margin would sit inside the measurement noise of a single run.
"""
from __future__ import annotations

import math
import statistics

MARGIN = 2.0  # points; see the module docstring
LEVEL = 0.95


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], list[float]]:
    """Seeds present in both rows and the differences 100 (a - b) in points, seed by seed."""
    seeds = sorted(set(a) & set(b))
    return seeds, [100.0 * (a[s] - b[s]) for s in seeds]


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean, SD, low, high) of the Student-t interval of the mean; SD 0 and an infinite interval with one value."""
    from scipy import stats
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, 0.0, -math.inf, math.inf
    sd = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def verdict(kind: str, low: float, high: float, margin: float = MARGIN) -> str:
    """'holds' / 'does not hold' / 'inconclusive' by the rules of the module docstring."""
    if kind == "beats":
        return "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive"
    if kind == "below":
        return "holds" if high < 0 else "does not hold" if low > 0 else "inconclusive"
    if kind == "matches":
        if -margin < low and high < margin:
            return "holds"
        return "does not hold" if low > margin or high < -margin else "inconclusive"
    if kind == "noninferior":
        return "holds" if low > -margin else "does not hold" if high < -margin else "inconclusive"
    raise ValueError(f"unknown claim kind {kind!r}: beats, below, matches or noninferior")


def seeds_to_settle(kind: str, mean: float, sd: float, margin: float = MARGIN, level: float = LEVEL,
                    most: int = 1000) -> int | None:
    """The smallest number of seeds n at which the interval mean +- t_{n-1} sd / sqrt(n) would give a verdict
    other than inconclusive, if the mean and SD stayed as observed; None if no n up to `most` does (a mean exactly
    on a boundary)."""
    from scipy import stats
    bound = {"beats": 0.0, "below": 0.0, "matches": margin, "noninferior": margin}[kind]
    gap = abs(abs(mean) - bound) if kind == "matches" else abs(mean + bound) if kind == "noninferior" else abs(mean)
    if gap == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None
