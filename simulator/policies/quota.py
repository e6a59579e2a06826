"""A provider's rate quotas as OpenAI's and Azure OpenAI's APIs enforce them: requests per
minute (``rpm``) and tokens per minute (``tpm``) over a sliding window, a refused request
answered 429 with a ``Retry-After`` of the seconds until it would fit; and what a gateway
does with that Retry-After.

Tokens are counted the way providers count them: at admission a request is charged its
input tokens plus the output it asks for at most (``max_tokens``); when it completes the
charge becomes what it used (input plus the tokens generated; input only for a failed one).
An entry is charged from its admission until ``window_s`` later, whatever its completion.
Written once with ``now`` passed in: the simulator settles an entry with its (known) end,
the emulated provider when the reply is out.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

__all__ = ["DEFAULT_MAX_TOKENS", "ERROR_RETRY_AFTER_S", "PROMPT_TOKENS", "ProviderQuota", "QuotaEntry", "header_seconds",
           "requested_tokens", "retry_after_wait"]

#: ``max_tokens`` a load-generator request asks for when it carries no output count of its own.
DEFAULT_MAX_TOKENS = 256
#: Retry-After of an emulated provider's 429 that is not its quota's (an error draw, a full limit).
ERROR_RETRY_AFTER_S = 1.0
#: Input tokens of a request that does not say (the emulated provider counts about this many for
#: a load-generator prompt: ``len(prompt) // 4``).
PROMPT_TOKENS = 5


def requested_tokens(input_tokens: float, own_output_tokens: float) -> int:
    """A request's charge at admission: its input tokens (``PROMPT_TOKENS`` when it has no
    count) plus the output it asks for at most (its own count, else ``DEFAULT_MAX_TOKENS``)."""
    inp = int(input_tokens) if input_tokens >= 0 else PROMPT_TOKENS
    out = max(1, int(round(own_output_tokens))) if own_output_tokens >= 0 else DEFAULT_MAX_TOKENS
    return inp + out


def header_seconds(seconds: float) -> int:
    """A wait as the ``Retry-After`` header carries it: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


class QuotaEntry:
    """One admitted request: charged ``estimate`` until it is settled, ``final`` from then."""

    __slots__ = ("at", "estimate", "final", "applied", "expired")

    def __init__(self, at: float, estimate: int) -> None:
        self.at = at
        self.estimate = estimate
        self.final = estimate
        self.applied = False  # the settlement is in the window's total
        self.expired = False

    @property
    def charge(self) -> int:
        return self.final if self.applied else self.estimate


class ProviderQuota:
    """Sliding-window rpm and tpm of one provider (``None``: no such limit).

    The window's token total is kept as a running sum: a settlement is applied when ``now``
    reaches its instant (a heap of pending ones), an entry leaves when ``now`` is a window past
    its admission; so an admission costs O(log n), not a pass over the window."""

    def __init__(self, rpm: int | None, tpm: int | None, window_s: float = 60.0) -> None:
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0) or window_s <= 0:
            raise ValueError(f"expected positive rpm, tpm and window, got {rpm}, {tpm}, {window_s}")
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self._entries: deque[QuotaEntry] = deque()
        self._pending: list[tuple[float, int, QuotaEntry]] = []  # (settled at, order, entry)
        self._order = 0
        self._tokens = 0
        self.admitted = 0
        self.refused = 0

    def _sync(self, now: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, entry = heapq.heappop(pending)
            if not entry.expired:
                self._tokens += entry.final - entry.estimate
                entry.applied = True
        entries = self._entries
        edge = now - self.window_s
        while entries and entries[0].at <= edge:
            entry = entries.popleft()
            entry.expired = True
            self._tokens -= entry.charge

    def used(self, now: float) -> tuple[int, int]:
        """(requests, tokens) charged in the window ending at ``now``."""
        self._sync(now)
        return len(self._entries), self._tokens

    def _fits(self, count: int, total: int, tokens: int) -> bool:
        return (self.rpm is None or count + 1 <= self.rpm) and (self.tpm is None or total + tokens <= self.tpm)

    def admit(self, now: float, tokens: int) -> QuotaEntry | float:
        """Charge a request of ``tokens`` (``requested_tokens``) now: its entry, or when it does
        not fit, the seconds until it would as the oldest entries leave the window (their
        charges as they stand now; the window's length when it never fits, as for a request
        above ``tpm`` alone)."""
        self._sync(now)
        count, total = len(self._entries), self._tokens
        if self._fits(count, total, tokens):
            entry = QuotaEntry(now, tokens)
            self._entries.append(entry)
            self._tokens += tokens
            self.admitted += 1
            return entry
        self.refused += 1
        for entry in self._entries:
            count -= 1
            total -= entry.charge
            if self._fits(count, total, tokens):
                return entry.at + self.window_s - now
        return self.window_s

    def settle(self, entry: QuotaEntry, at: float, tokens: int) -> None:
        """The request of ``entry`` completed at ``at`` (now or later) having used ``tokens``."""
        entry.final = int(tokens)
        self._order += 1
        heapq.heappush(self._pending, (at, self._order, entry))

    def __repr__(self) -> str:
        return f"<ProviderQuota rpm={self.rpm} tpm={self.tpm} entries={len(self._entries)} refused={self.refused}>"


def retry_after_wait(retry_after_s: float | None, cap_s: float | None, waits: int, max_waits: int) -> float | None:
    """How long a gateway waits before calling the same provider again after its 429 (None: it
    does not wait, and the 429 falls back or fails as the fallback says): the provider's
    Retry-After when one was given, no longer than ``cap_s``, at most ``max_waits`` times a
    request."""
    if cap_s is None or retry_after_s is None or waits >= max_waits or retry_after_s > cap_s:
        return None
    return max(retry_after_s, 0.0)
