"""Value types of the judge: what a case asks, what each metric and the case came to.

Defaults live here, each with the reason it was chosen, so the README, the classifier and the
JSON reader all take them from one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Below this many samples on either side (after missing values and outliers are removed) a metric
# is "nodata". Why 10: a sample is usually one measurement interval (a minute). With 4 per side
# the smallest two-sided p a rank test can give is 0.029, so it could never be significant at
# the default 0.98 confidence; at 10 per side the normal approximation of the rank statistic is
# close (the usual rule of thumb is n >= 8), and a shift of two standard deviations is detected
# about 97 % of the time (bench/judge measures detection at exactly this minimum).
DEFAULT_MIN_SAMPLES = 10

# The rank test's significance is 1 - confidence, two-sided (Kayenta's judge uses 0.98 too); the
# Hodges-Lehmann interval is given at the same level.
DEFAULT_CONFIDENCE = 0.98

# Tukey fence factor for optional outlier removal: values beyond Q1 - k*IQR or Q3 + k*IQR of
# their own side are dropped. 3 (Tukey's "far out") drops only gross outliers.
DEFAULT_OUTLIER_FACTOR = 3.0

# The shift needs all canary x baseline differences in memory (8 bytes each): 4 million pairs is
# 32 MB, e.g. two days of one-minute samples against one day. Larger inputs are refused by the
# readers (cases, the kayenta provider) with this limit in the message rather than slowly
# swapping. Here, not in stats, so that the readers load without numpy and scipy.
MAX_PAIRS = 4_000_000


class Direction(enum.StrEnum):
    """Which change on the canary is bad."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class EffectMeasure(enum.StrEnum):
    MEAN_RATIO = "meanRatio"  # canary mean / baseline mean; 1.0 is no change
    CLES = "cles"  # P(canary value > baseline value) + half the ties; 0.5 is no change


# Default margins by measure: (allowedIncrease, allowedDecrease). Two groups of pods never
# give identical distributions, and with enough samples a 2 % difference becomes significant;
# a significant change fails only beyond these margins. meanRatio: 10 % either way (tune per
# metric: error rates are noisier and usually get a wider allowance). CLES: 0.6 / 0.4, a canary
# value above a baseline value in 60 % of pairs (about a third of a standard deviation's shift
# for normal data).
NEUTRAL = {EffectMeasure.MEAN_RATIO: 1.0, EffectMeasure.CLES: 0.5}
DEFAULT_ALLOWED = {EffectMeasure.MEAN_RATIO: (1.1, 0.9), EffectMeasure.CLES: (0.6, 0.4)}


class Classification(enum.StrEnum):
    PASS = "pass"
    HIGH = "high"
    LOW = "low"
    NODATA = "nodata"


class Verdict(enum.StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NODATA = "nodata"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a case: its samples and how to judge them."""

    name: str
    canary: tuple[float | None, ...]
    baseline: tuple[float | None, ...]
    direction: Direction = Direction.EITHER
    critical: bool = False
    effect: EffectMeasure = EffectMeasure.MEAN_RATIO
    allowed_increase: float | None = None  # None: DEFAULT_ALLOWED of the effect measure
    allowed_decrease: float | None = None
    critical_increase: float | None = None  # None: no critical margin
    critical_decrease: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES
    confidence: float = DEFAULT_CONFIDENCE
    replace_missing: bool = False  # nanStrategy "replace": a missing value counts as 0
    remove_outliers: bool = False
    outlier_factor: float = DEFAULT_OUTLIER_FACTOR
    weight: float = 1.0
    group: str | None = None


@dataclass(frozen=True)
class Thresholds:
    passing: float
    marginal: float


@dataclass(frozen=True)
class Case:
    id: str
    thresholds: Thresholds
    metrics: tuple[MetricSpec, ...]
    group_weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Side:
    """What was left of one side's samples, and what was removed from it."""

    count: int
    mean: float
    missing: int  # null, NaN or infinite values removed (or replaced by 0)
    outliers: int


@dataclass(frozen=True)
class MetricResult:
    name: str
    classification: Classification
    explanation: str
    canary: Side
    baseline: Side
    critical: bool = False  # the metric is critical (any non-pass result decides the case)
    critical_breach: bool = False  # beyond criticalIncrease/criticalDecrease: the case fails
    p_value: float | None = None
    shift: float | None = None  # Hodges-Lehmann estimate of canary - baseline
    shift_low: float | None = None
    shift_high: float | None = None
    confidence: float = DEFAULT_CONFIDENCE
    effect: EffectMeasure = EffectMeasure.MEAN_RATIO
    effect_size: float | None = None  # None when undefined (e.g. a mean of 0 or below)
    allowed_increase: float = 1.1
    allowed_decrease: float = 0.9


@dataclass(frozen=True)
class CaseResult:
    id: str
    verdict: Verdict
    score: float
    explanation: str
    metrics: tuple[MetricResult, ...]


@dataclass(frozen=True)
class JudgedMetric:
    """One metric's result as a measurement keeps it for reports (plain values, so the rollout
    state stores it as JSON: classification and effect are their enum values, and numbers that
    are not finite are None)."""

    name: str
    classification: str  # a Classification value
    explanation: str
    direction: str = Direction.EITHER.value
    critical: bool = False
    critical_breach: bool = False
    canary_mean: float | None = None
    baseline_mean: float | None = None
    canary_count: int = 0
    baseline_count: int = 0
    p_value: float | None = None
    effect: str = EffectMeasure.MEAN_RATIO.value
    effect_size: float | None = None
    allowed_increase: float = 1.1
    allowed_decrease: float = 0.9


@dataclass(frozen=True)
class Judgement:
    """A judged case as a measurement keeps it: the score against the thresholds, the words
    that explain it, and each metric."""

    score: float
    verdict: str  # a Verdict value
    passing: float
    marginal: float
    explanation: str
    metrics: tuple[JudgedMetric, ...] = ()
