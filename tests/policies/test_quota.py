"""Provider quotas (rpm, tpm over a sliding minute, Retry-After when refused) and the gateway's
Retry-After wait, as both executors call them."""

from __future__ import annotations

import pytest

from simulator.policies.quota import ProviderQuota, QuotaEntry, header_seconds, requested_tokens, retry_after_wait


def test_rpm_refuses_the_request_beyond_the_limit_until_the_oldest_leaves_the_window():
    q = ProviderQuota(rpm=3, tpm=None)
    assert all(isinstance(q.admit(t, 10), QuotaEntry) for t in (0.0, 10.0, 20.0))
    wait = q.admit(30.0, 10)
    assert wait == pytest.approx(30.0)  # the entry of t=0 leaves at 60
    assert header_seconds(wait) == 30
    assert isinstance(q.admit(60.0, 10), QuotaEntry)
    assert q.used(60.0) == (3, 30)


def test_tpm_charges_the_request_then_what_it_used():
    q = ProviderQuota(rpm=None, tpm=1000)
    a = q.admit(0.0, requested_tokens(100, -1))  # 100 in + 256 asked for
    assert q.used(0.0) == (1, 356)
    q.settle(a, 2.0, 100 + 20)  # it generated 20 tokens, done at 2 s
    assert q.used(1.0) == (1, 356)
    assert q.used(2.0) == (1, 120)
    b = q.admit(3.0, 700)
    assert isinstance(b, QuotaEntry)
    wait = q.admit(4.0, 300)  # 120 + 700 + 300 > 1000: until a leaves at 60 s
    assert wait == pytest.approx(56.0)
    assert q.admit(5.0, 5000) == 60.0  # never fits: a window


def test_a_settlement_after_the_entry_left_is_ignored():
    q = ProviderQuota(rpm=None, tpm=100)
    a = q.admit(0.0, 50)
    q.settle(a, 70.0, 10)
    assert q.used(65.0) == (0, 0)
    assert q.used(71.0) == (0, 0)


def test_retry_after_wait_honours_the_header_up_to_a_cap():
    assert retry_after_wait(2.0, 5.0, 0, 1) == 2.0
    assert retry_after_wait(8.0, 5.0, 0, 1) is None  # beyond the cap: fall back instead
    assert retry_after_wait(2.0, 5.0, 1, 1) is None  # waited enough
    assert retry_after_wait(2.0, None, 0, 1) is None  # not configured
    assert retry_after_wait(None, 5.0, 0, 1) is None  # no header
