"""The LiteLLM profile's arithmetic on instants it would read off a run (no proxy needed)."""

import numpy as np
import pytest

from gwsim.litellm.profile import MIN_STEP_GAIN, before_call_share, call_phases, first_step, stalls


def test_each_request_is_matched_to_its_own_call():
    # requests sent every 100 ms; each call reaches the provider 15 ms after its send, is
    # answered 20 ms later, and the reply is read 8 ms after that; the third request's call
    # never reached the provider (its "call" is the fourth request's, after the fourth's send)
    sent = np.array([0.0, 0.1, 0.2, 0.3])
    finished = np.array([0.043, 0.143, 0.25, 0.343])
    calls = np.array([[0.015, 0.035], [0.115, 0.135], [0.315, 0.335]])
    before, after = call_phases(sent, finished, calls)
    assert before == pytest.approx([0.015, 0.015, 0.015])
    assert after == pytest.approx([0.008, 0.008, 0.008])


def test_each_reply_is_placed_against_the_next_send():
    sent = np.array([0.0, 0.1, 0.2])
    finished = np.array([0.104, 0.148, 0.25])
    calls = np.array([[0.015, 0.098], [0.115, 0.135], [0.215, 0.235]])
    _, _, offset = call_phases(sent, finished, calls, with_offsets=True)
    assert offset[:2] == pytest.approx([-0.002, -0.065]) and np.isinf(offset[2])


def test_the_first_step_is_read_off_the_replies_around_the_next_arrival():
    """Replies 5 ms from the reply to its reading, with 0.3 ms of noise; the next request reaches
    the loop 1 ms after its send and its first step takes 4 ms: a reply whose 3 ms of work is
    under way then waits 4 ms, one coming during the step waits the rest of it."""
    rng = np.random.default_rng(3)
    offset = rng.uniform(-0.012, 0.016, 2000)
    x = offset - 0.001
    extra = np.where((x >= -0.003) & (x < 0), 0.004, 0.0) + np.where((x >= 0) & (x < 0.004), 0.004 - x, 0.0)
    after = 0.005 + rng.normal(0, 0.0003, offset.size) + extra
    h, delta, gain = first_step(offset, after)
    assert h == pytest.approx(0.004, abs=0.0005)
    assert delta == pytest.approx(0.001, abs=0.0005)
    assert gain > 0.5
    # no step: the fit gains little over a flat line, below the profile's bar
    _, _, flat_gain = first_step(offset, 0.005 + rng.normal(0, 0.0003, offset.size))
    assert flat_gain < MIN_STEP_GAIN


def test_a_call_without_a_logged_reply_is_left_out():
    before, after = call_phases(np.array([0.0, 0.1]), np.array([0.05, 0.15]),
                                np.array([[0.01, np.nan], [0.11, 0.13]]))
    assert before == pytest.approx([0.01]) and after == pytest.approx([0.02])


def test_the_share_before_the_call_leaves_out_the_client_and_the_emulator():
    # 15 ms before the call of which 0.5 ms is the send and 1 ms the emulator's reading; 8 ms
    # after, of which 1 ms is the emulator's writing and 1 ms the client's read: 13.5 against 6
    share = before_call_share(np.full(10, 0.015), np.full(10, 0.008), 0.0005, 0.001, 0.002)
    assert share == pytest.approx(13.5 / 19.5)
    assert before_call_share(np.array([]), np.array([]), 0.0, 0.0, 0.0) == 0.5


def test_delays_close_together_are_one_stall():
    at = np.arange(0.0, 10.0, 0.1)
    excess = np.full(at.size, 0.02)
    excess[30:34] = [0.6, 0.5, 0.4, 0.3]  # one stall: the requests behind it wait less and less
    excess[80] = 0.3
    assert stalls(at, excess) == pytest.approx([0.58, 0.28])
