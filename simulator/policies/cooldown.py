"""Deployment cooldowns as LiteLLM's router runs them: when a failing deployment leaves its model
group's rotation, and for how long.

A failed call on a deployment is counted (per deployment, in a one-minute window that starts
at the window's first failure, as LiteLLM's in-memory counters with a 60 s TTL do), then the
router decides whether to cool the deployment down:

* no cooldown at all when cooldowns are disabled, when the cooldown would last 0 s, and for a
  4xx other than 401/402/404/408/429 (a connection refused or reset reaches the router as an
  ``InternalServerError``, 500, measured on the real proxy: it cools down like one);
* LiteLLM's default rule, when neither ``allowed_fails`` (at a value other than LiteLLM's
  default of 3) nor an ``allowed_fails_policy`` is set: a 429 cools a deployment of a group
  with alternatives at once; so does a failure share above 50 % of at least 5 calls in the
  current minute (again only with alternatives); a deployment failing every one of at least
  1,000 calls in the minute cools down even alone;
* with ``allowed_fails`` (or a per-error ``allowed_fails_policy``): the failures are counted
  in a window of ``cooldown_time`` from the window's first failure, and the deployment cools
  down once the count exceeds the allowance; a group's lone deployment (no alternative, no
  fallback group) never cools down unless the policy names the error.

The cooldown lasts the deployment's own ``cooldown_time``, else the error's ``Retry-After``
(a provider's 429), else the router's ``cooldown_time`` (LiteLLM's default 5 s); a deployment
already cooling down is not extended.  ``now`` is passed in; the log holds ``("fail:<id>",
t)`` and ``("cooldown:<id>", t)`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.policies.eventlog import new_log

__all__ = [
    "ALLOWED_FAILS_DEFAULT",
    "CONNECTION_KINDS",
    "DEFAULT_COOLDOWN_S",
    "KIND_STATUS",
    "CooldownConfig",
    "Cooldowns",
    "error_class",
    "retryable_status",
]

#: LiteLLM's router default cooldown (``DEFAULT_COOLDOWN_TIME_SECONDS``).
DEFAULT_COOLDOWN_S = 5.0
#: LiteLLM's module default ``allowed_fails``: a router set to it counts as "not set".
ALLOWED_FAILS_DEFAULT = 3
#: The default rule's failure share (``DEFAULT_FAILURE_THRESHOLD_PERCENT``) and the calls in the
#: minute it needs (``DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS``).
FAILURE_SHARE = 0.5
FAILURE_SHARE_MIN_CALLS = 5
#: Calls in a minute, all failed, that cool down even a group's lone deployment.
ALL_FAILED_MIN_CALLS = 1000
MINUTE_S = 60.0

#: The HTTP status LiteLLM gives each error kind (the client sees it when the request fails):
#: a provider's 429/500/503, a timeout (408), a connection refused or reset mid-response
#: (500), no deployment available (every one cooling down or over its
#: limits: ``RouterRateLimitError``, 429), a deployment's ``max_parallel_requests`` full or its
#: ``rpm`` used up (``RateLimitError`` raised by the router itself, 429).
KIND_STATUS = {
    "429": 429, "500": 500, "503": 503, "timeout": 408, "connect": 500, "reset": 500,
    "no_deployments": 429, "max_parallel": 429, "rpm_limit": 429,
}
#: Connection failures (refused, reset mid-response): an ``InternalServerError`` to the router.
CONNECTION_KINDS = frozenset({"connect", "reset"})


def error_class(kind: str) -> str:
    """The LiteLLM exception family of an error kind, as its policies (allowed fails, retries) name it."""
    if kind in ("429", "max_parallel", "rpm_limit"):
        return "rate_limit"
    if kind == "timeout":
        return "timeout"
    if kind == "500" or kind in CONNECTION_KINDS:
        return "internal_server_error"
    if kind == "503":
        return "service_unavailable"
    return "other"  # no deployment available


def retryable_status(status: int) -> bool:
    """LiteLLM's ``should_retry``: 408, 409, 429 and 5xx."""
    return status in (408, 409, 429) or status >= 500


@dataclass(frozen=True)
class CooldownConfig:
    """The router's cooldown settings (``router_settings`` of a LiteLLM proxy config)."""

    cooldown_s: float = DEFAULT_COOLDOWN_S
    allowed_fails: int | None = None  # None: LiteLLM's default rule
    allowed_fails_policy: Mapping[str, int] = field(default_factory=dict)  # error_class -> allowed fails
    disabled: bool = False

    @property
    def counts_fails(self) -> bool:
        """Whether the allowed-fails counter decides (else LiteLLM's default rule)."""
        set_on_router = self.allowed_fails is not None and self.allowed_fails != ALLOWED_FAILS_DEFAULT
        return bool(self.allowed_fails_policy) or set_on_router


class _Window:
    """A counter whose window opens at its first increment and lasts ``ttl_s`` (a cache key with a TTL)."""

    __slots__ = ("count", "ends_at")

    def __init__(self) -> None:
        self.count = 0
        self.ends_at = -1.0

    def get(self, now: float) -> int:
        return self.count if now <= self.ends_at else 0

    def add(self, now: float, ttl_s: float) -> int:
        if now > self.ends_at:
            self.count, self.ends_at = 0, now + ttl_s
        self.count += 1
        return self.count


class Cooldowns:
    """Cooldown state of every deployment of one router.

    ``alternatives[d]``: whether deployment ``d``'s group has another deployment;
    ``fallback[d]``: whether its group has a fallback group (a lone deployment with one is not
    "lone").  Deployment-level ``cooldown_time`` overrides come with each failure.
    """

    def __init__(
        self, config: CooldownConfig, alternatives: Mapping[str, bool], fallback: Mapping[str, bool], *,
        log_limit: int | None = None,
    ) -> None:
        self.config = config
        self._alternatives = dict(alternatives)
        self._fallback = dict(fallback)
        self._successes: dict[str, _Window] = {d: _Window() for d in alternatives}
        self._fails: dict[str, _Window] = {d: _Window() for d in alternatives}
        self._allowed: dict[str, _Window] = {d: _Window() for d in alternatives}
        self._until: dict[str, float] = {}
        self.log: list[tuple[str, float]] = new_log(log_limit)
        self.cooldowns = 0

    def cooling(self, deployment: str, now: float) -> bool:
        return now < self._until.get(deployment, -1.0)

    def until(self, deployment: str) -> float | None:
        """When the deployment's current (or last) cooldown ends, None if it never cooled down."""
        return self._until.get(deployment)

    def on_success(self, deployment: str, now: float) -> None:
        self._successes[deployment].add(now, MINUTE_S)

    def on_failure(
        self, deployment: str, kind: str, now: float, *, retry_after_s: float | None = None,
        deployment_cooldown_s: float | None = None, counted: bool = True,
    ) -> bool:
        """Record a failed call; True when it puts (or finds) the deployment in cooldown.

        ``retry_after_s``: the error's Retry-After header (a provider's 429), None without one;
        ``deployment_cooldown_s``: the deployment's own ``cooldown_time``; ``counted=False``:
        judged without counting it among the minute's failures (LiteLLM's own call for a failed
        fallback group)."""
        if counted:
            self._fails[deployment].add(now, MINUTE_S)
            self.log.append((f"fail:{deployment}", now))
        if deployment_cooldown_s is not None and deployment_cooldown_s >= 0:
            duration = deployment_cooldown_s
        elif retry_after_s is not None and retry_after_s >= 0:
            duration = retry_after_s
        else:
            duration = self.config.cooldown_s
        if not self._may_cool(kind, duration) or not self._should_cool(deployment, kind, now):
            return False
        if not self.cooling(deployment, now):  # an active cooldown is not extended
            self._until[deployment] = now + duration
            self.cooldowns += 1
            self.log.append((f"cooldown:{deployment}", now))
        return True

    def _may_cool(self, kind: str, duration: float) -> bool:
        if self.config.disabled or abs(duration) < 1e-9:
            return False
        status = KIND_STATUS.get(kind, 500)
        return not (400 <= status < 500) or status in (401, 402, 404, 408, 429)

    def _should_cool(self, deployment: str, kind: str, now: float) -> bool:
        cfg = self.config
        single = not self._alternatives[deployment]
        status = KIND_STATUS.get(kind, 500)
        if not cfg.counts_fails:
            ok = self._successes[deployment].get(now)
            failed = self._fails[deployment].get(now)
            total = ok + failed
            share = failed / total if total else 0.0
            if status == 429 and not single:
                return True
            if share == 1.0 and total >= ALL_FAILED_MIN_CALLS:
                return True
            if share > FAILURE_SHARE and total >= FAILURE_SHARE_MIN_CALLS and not single:
                return True
            return not retryable_status(status)
        named = cfg.allowed_fails_policy.get(error_class(kind))
        if single and not self._fallback[deployment] and named is None:
            return False
        allowed = named if named is not None else (cfg.allowed_fails if cfg.allowed_fails is not None else ALLOWED_FAILS_DEFAULT)
        # the counter lives for the router's cooldown_time, whatever this cooldown will last
        return self._allowed[deployment].add(now, cfg.cooldown_s or DEFAULT_COOLDOWN_S) > allowed

    def __repr__(self) -> str:
        return f"<Cooldowns cooling={sorted(d for d, t in self._until.items())} cooldowns={self.cooldowns}>"
