"""Random quantities in a scenario: service times, think times, token counts.

Each distribution is written in a scenario file as an inline table such as
``{dist = "lognormal", median = "400ms", p95 = "1.2s"}``.  Values that are durations
are written with units and held in seconds; dimensionless ones (token counts,
factors) are plain numbers.  Every distribution knows its mean, prints readably and
samples from a numpy ``Generator`` handed in by the caller, so that each source of
randomness keeps its own stream.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from simulator.units import UnitError, format_duration, parse_quantity

_Z95 = 1.6448536269514722  # standard normal quantile at 0.95
_LOG_MAX = math.log(1e300)  # exp() of more than this is past any meaningful duration (and near overflow)


def _q(value: Any) -> float:
    try:
        return parse_quantity(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


def _fmt(x: float) -> str:
    return format_duration(x)


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def mean(self) -> float:  # pragma: no cover - each subclass overrides
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> float:  # pragma: no cover
        raise NotImplementedError

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.array([self.sample(rng) for _ in range(n)])


class Exponential(_Dist):
    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(alias="mean", description="Mean of the exponential distribution.")

    @field_validator("mean_", mode="before")
    @classmethod
    def _units(cls, v: Any) -> float:
        return _q(v)

    @field_validator("mean_")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"expected a positive mean, got {v}")
        return v

    @property
    def mean(self) -> float:
        return self.mean_

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean_))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_, n)

    def __str__(self) -> str:
        return f"Exponential(mean={_fmt(self.mean_)})"


class Deterministic(_Dist):
    dist: Literal["deterministic"] = "deterministic"
    value: float = Field(description="The constant value.")

    @field_validator("value", mode="before")
    @classmethod
    def _units(cls, v: Any) -> float:
        return _q(v)

    @field_validator("value")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"expected a non-negative value, got {v}")
        return v

    @property
    def mean(self) -> float:
        return self.value

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def __str__(self) -> str:
        return f"Deterministic({_fmt(self.value)})"


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound.")

    @field_validator("low", "high", mode="before")
    @classmethod
    def _units(cls, v: Any) -> float:
        return _q(v)

    @model_validator(mode="after")
    def _ordered(self) -> "Uniform":
        if self.low < 0 or self.high < self.low:
            raise ValueError(f"expected 0 <= low <= high, got low={self.low}, high={self.high}")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def __str__(self) -> str:
        return f"Uniform({_fmt(self.low)}, {_fmt(self.high)})"


class LogNormal(_Dist):
    """Given by ``median`` and ``p95`` (what people measure), or by ``mu``/``sigma`` of log-seconds."""

    dist: Literal["lognormal"] = "lognormal"
    median: float | None = Field(default=None, description="Median (50th percentile).")
    p95: float | None = Field(default=None, description="95th percentile; must exceed the median.")
    mu: float | None = Field(default=None, description="Mean of the underlying normal (log units).")
    sigma: float | None = Field(default=None, description="Standard deviation of the underlying normal.")

    @field_validator("median", "p95", mode="before")
    @classmethod
    def _units(cls, v: Any) -> Any:
        return None if v is None else _q(v)

    @model_validator(mode="after")
    def _complete(self) -> "LogNormal":
        by_quantiles = self.median is not None or self.p95 is not None
        by_params = self.mu is not None or self.sigma is not None
        if by_quantiles and by_params:
            raise ValueError("expected either median and p95, or mu and sigma, not both")
        if by_quantiles:
            if self.median is None or self.p95 is None:
                raise ValueError(f"expected both median and p95, got median={self.median}, p95={self.p95}")
            if self.median <= 0 or self.p95 <= self.median:
                raise ValueError(f"expected 0 < median < p95, got median={self.median}, p95={self.p95}")
            given = f"median={self.median}, p95={self.p95}"
        elif by_params:
            if self.mu is None or self.sigma is None:
                raise ValueError(f"expected both mu and sigma, got mu={self.mu}, sigma={self.sigma}")
            if not (self.sigma > 0 and math.isfinite(self.sigma) and math.isfinite(self.mu)):
                raise ValueError(f"expected a finite mu and sigma > 0, got mu={self.mu}, sigma={self.sigma}")
            given = f"mu={self.mu}, sigma={self.sigma}"
        else:
            raise ValueError("expected median and p95, or mu and sigma, got neither")
        # the mean exp(mu + sigma^2/2) must exist as a float, or .mean and sampling overflow
        mu, sigma = self.params
        if not (math.isfinite(sigma) and sigma > 0 and mu + sigma * sigma / 2 < _LOG_MAX):
            raise ValueError(f"expected a lognormal with a finite mean, got {given}")
        return self

    @property
    def params(self) -> tuple[float, float]:
        if self.mu is not None and self.sigma is not None:
            return self.mu, self.sigma
        assert self.median is not None and self.p95 is not None
        return math.log(self.median), math.log(self.p95 / self.median) / _Z95

    @property
    def mean(self) -> float:
        mu, sigma = self.params
        return math.exp(mu + sigma * sigma / 2)

    def sample(self, rng: np.random.Generator) -> float:
        mu, sigma = self.params
        return float(rng.lognormal(mu, sigma))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu, sigma = self.params
        return rng.lognormal(mu, sigma, n)

    def __str__(self) -> str:
        mu, sigma = self.params
        return f"LogNormal(median={_fmt(math.exp(mu))}, p95={_fmt(math.exp(mu + _Z95 * sigma))})"


class Gamma(_Dist):
    """Given by ``mean`` and coefficient of variation ``cv``, or by ``shape`` and ``scale``."""

    dist: Literal["gamma"] = "gamma"
    mean_: float | None = Field(default=None, alias="mean", description="Mean.")
    cv: float | None = Field(default=None, description="Coefficient of variation (std / mean).")
    shape: float | None = Field(default=None, description="Shape k.")
    scale: float | None = Field(default=None, description="Scale theta.")

    @field_validator("mean_", "scale", mode="before")
    @classmethod
    def _units(cls, v: Any) -> Any:
        return None if v is None else _q(v)

    @model_validator(mode="after")
    def _complete(self) -> "Gamma":
        if self.mean_ is not None or self.cv is not None:
            if self.shape is not None or self.scale is not None:
                raise ValueError("expected either mean and cv, or shape and scale, not both")
            if self.mean_ is None or self.cv is None or self.mean_ <= 0 or self.cv <= 0:
                raise ValueError(f"expected mean > 0 and cv > 0, got mean={self.mean_}, cv={self.cv}")
            given = f"mean={self.mean_}, cv={self.cv}"
        elif self.shape is None or self.scale is None or self.shape <= 0 or self.scale <= 0:
            raise ValueError(f"expected shape > 0 and scale > 0, got shape={self.shape}, scale={self.scale}")
        else:
            given = f"shape={self.shape}, scale={self.scale}"
        # cv -> shape 1/cv^2 and scale mean/shape: a tiny cv overflows the one, underflows the other
        finite = all(x is None or math.isfinite(x) for x in (self.mean_, self.cv, self.shape, self.scale))
        k, theta = (self.shape, self.scale) if self.shape is not None else (None, None)
        if finite and k is None:
            cv2 = self.cv * self.cv
            k = 1.0 / cv2 if cv2 > 0 else math.inf
            theta = self.mean_ / k
        if not (finite and math.isfinite(k) and theta > 0 and math.isfinite(k * theta)):
            raise ValueError(f"expected a gamma with a finite shape, scale and mean, got {given}")
        return self

    @property
    def params(self) -> tuple[float, float]:
        if self.shape is not None and self.scale is not None:
            return self.shape, self.scale
        assert self.mean_ is not None and self.cv is not None
        k = 1.0 / (self.cv * self.cv)
        return k, self.mean_ / k

    @property
    def mean(self) -> float:
        k, theta = self.params
        return k * theta

    def sample(self, rng: np.random.Generator) -> float:
        k, theta = self.params
        return float(rng.gamma(k, theta))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k, theta = self.params
        return rng.gamma(k, theta, n)

    def __str__(self) -> str:
        k, theta = self.params
        return f"Gamma(mean={_fmt(k * theta)}, cv={1 / math.sqrt(k):.3g})"


class Weibull(_Dist):
    """Given by ``shape`` k and ``scale`` lambda: P(X > x) = exp(-(x / lambda)^k).  A shape
    below 1 gives a heavier tail than the exponential, above 1 a lighter one (3.6 is close
    to a normal); service times fitted by ``gwsim fit latency`` often land here."""

    dist: Literal["weibull"] = "weibull"
    shape: float = Field(description="Shape k (> 0): 1 is the exponential.")
    scale: float = Field(description="Scale lambda (a duration > 0): the 63rd percentile.")

    @field_validator("scale", mode="before")
    @classmethod
    def _units(cls, v: Any) -> float:
        return _q(v)

    @model_validator(mode="after")
    def _check(self) -> "Weibull":
        if not (self.shape > 0 and self.scale > 0 and math.isfinite(self.shape) and math.isfinite(self.scale)):
            raise ValueError(f"expected shape > 0 and scale > 0, got shape={self.shape}, scale={self.scale}")
        # the mean is scale * Gamma(1 + 1/shape): a tiny shape puts it past any duration
        if math.log(self.scale) + math.lgamma(1 + 1 / self.shape) > _LOG_MAX:
            raise ValueError(f"expected a weibull with a finite mean, got shape={self.shape}, scale={self.scale}")
        return self

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1 + 1 / self.shape)

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.scale * rng.weibull(self.shape))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.scale * rng.weibull(self.shape, n)

    def __str__(self) -> str:
        return f"Weibull(shape={self.shape:.3g}, scale={_fmt(self.scale)})"


class Empirical(_Dist):
    """Samples drawn with replacement from a file of measured values (one column of a CSV)."""

    dist: Literal["empirical"] = "empirical"
    file: str = Field(description="CSV or text file of samples, relative to the scenario file.")
    column: str | None = Field(default=None, description="Column name; the first column when omitted.")
    unit: Literal["s", "ms", "us", "1"] = Field(default="s", description="Unit of the values in the file; '1' for plain numbers.")
    values: tuple[float, ...] = Field(default=(), exclude=True, description="Loaded samples (filled from the file).")

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> "Empirical":
        if self.values:
            if not all(math.isfinite(x) and x >= 0 for x in self.values):
                raise ValueError(f"expected finite non-negative values, got {min(self.values)}")
            return self
        base = Path((info.context or {}).get("base_dir", "."))
        path = (base / self.file) if not Path(self.file).is_absolute() else Path(self.file)
        try:
            what = "" if path.is_file() else "a directory" if path.is_dir() else "not a regular file" if path.exists() else "not found"
        except OSError as exc:  # a name the file system refuses (too long, ...)
            what = (exc.strerror or exc.__class__.__name__).lower()
        if what:
            raise ValueError(f"expected a readable file of samples, got {str(path)[:200]!r} ({what})")
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "1": 1.0}[self.unit]
        values: list[float] = []
        try:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"expected a readable CSV of samples, got {str(path)!r} ({exc.__class__.__name__})") from None
        if not rows:
            raise ValueError(f"expected at least one sample, got an empty file {str(path)!r}")
        col = 0
        start = 0
        try:
            float(rows[0][0])
        except (ValueError, IndexError):
            header = rows[0]
            start = 1
            if self.column is not None:
                if self.column not in header:
                    raise ValueError(f"expected a column {self.column!r} in {str(path)!r}, got columns {header}")
                col = header.index(self.column)
        for row in rows[start:]:
            if not row:
                continue
            try:
                x = float(row[col]) * scale
            except (ValueError, IndexError):
                raise ValueError(f"expected numbers in {str(path)!r}, got {row!r}") from None
            if not math.isfinite(x) or x < 0:
                raise ValueError(f"expected finite non-negative samples in {str(path)!r}, got {x}")
            values.append(x)
        if not values:
            raise ValueError(f"expected at least one sample in {str(path)!r}")
        object.__setattr__(self, "values", tuple(values))
        return self

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    def sample(self, rng: np.random.Generator) -> float:
        return self.values[int(rng.integers(len(self.values)))]

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.values)[rng.integers(len(self.values), size=n)]

    def __str__(self) -> str:
        return f"Empirical({self.file}, n={len(self.values)}, mean={_fmt(self.mean)})"


class MixtureComponent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(gt=0, allow_inf_nan=False, description="Relative weight of this component.")
    of: "Distribution" = Field(description="The component distribution.")


class Mixture(_Dist):
    dist: Literal["mixture"] = "mixture"
    components: tuple[MixtureComponent, ...] = Field(min_length=1, description="Weighted components.")

    @model_validator(mode="after")
    def _weights(self) -> "Mixture":
        total = sum(c.weight for c in self.components)
        if not math.isfinite(total):  # probabilities would be NaN
            raise ValueError(f"expected weights with a finite sum, got sum {total}")
        return self

    @property
    def _probs(self) -> np.ndarray:
        w = np.array([c.weight for c in self.components], dtype=float)
        return w / w.sum()

    @property
    def mean(self) -> float:
        return float(sum(p * c.of.mean for p, c in zip(self._probs, self.components)))

    def sample(self, rng: np.random.Generator) -> float:
        u = rng.random()
        acc = 0.0
        probs = self._probs
        for p, c in zip(probs, self.components):
            acc += p
            if u < acc:
                return c.of.sample(rng)
        return self.components[-1].of.sample(rng)

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(self.components), size=n, p=self._probs)
        out = np.empty(n)
        for i, c in enumerate(self.components):
            mask = which == i
            k = int(mask.sum())
            if k:
                out[mask] = c.of.sample_many(rng, k)
        return out

    def __str__(self) -> str:
        parts = ", ".join(f"{p:.2g}*{c.of}" for p, c in zip(self._probs, self.components))
        return f"Mixture({parts})"


Distribution = Annotated[
    Union[Exponential, Deterministic, Uniform, LogNormal, Gamma, Weibull, Empirical, Mixture],
    Field(discriminator="dist"),
]
MixtureComponent.model_rebuild()
Mixture.model_rebuild()

ZERO = Deterministic(value=0.0)


def constant(seconds: float) -> Deterministic:
    return Deterministic(value=seconds)


class Sampler:
    """Draws from a distribution in blocks: one numpy call per block instead of per value.

    The simulator samples millions of values; a scalar numpy call costs about a microsecond,
    a value from a pre-drawn block a few tens of nanoseconds.
    """

    __slots__ = ("_dist", "_rng", "_block", "_buf", "_i", "constant")

    def __init__(self, dist: "_Dist", rng: np.random.Generator, block: int = 2048) -> None:
        self._dist = dist
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = block  # the first call draws a block
        self.constant: float | None = dist.value if isinstance(dist, Deterministic) else None

    def __call__(self) -> float:
        if self.constant is not None:
            return self.constant
        i = self._i
        if i >= self._block:
            self._buf = self._dist.sample_many(self._rng, self._block).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]
