"""The stream schedule both executors follow: first token alone at TTFT, the last at the end of
decoding, chunks at least MIN_CHUNK_S apart; and what a client measures on it."""

from __future__ import annotations

import math

import pytest

from simulator.policies.streaming import MIN_CHUNK_S, chunk_schedule, even_figures, figures_of, reply_tokens


def test_slow_decode_sends_one_token_per_chunk_from_ttft_to_the_end():
    chunks = chunk_schedule(0.1, 1.0, 11)  # 100 ms between tokens
    assert [n for _, n in chunks] == [1] * 11
    assert chunks[0][0] == pytest.approx(0.1)
    assert chunks[-1][0] == pytest.approx(1.1)
    assert all(b[0] - a[0] == pytest.approx(0.1) for a, b in zip(chunks, chunks[1:]))


def test_fast_decode_groups_tokens_so_chunks_stay_apart():
    chunks = chunk_schedule(0.0, 0.1, 101)  # 1 ms between tokens: 20 tokens a chunk
    assert chunks[0] == (0.0, 1)
    assert sum(n for _, n in chunks) == 101
    gaps = [b[0] - a[0] for a, b in zip(chunks, chunks[1:])]
    assert all(g >= MIN_CHUNK_S - 1e-12 for g in gaps[:-1])
    assert chunks[-1][0] == pytest.approx(0.1)


@pytest.mark.parametrize("decode,tokens", [(1.0, 11), (0.1, 101), (0.37, 7), (2.0, 2)])
def test_even_figures_are_what_a_client_measures_on_the_schedule(decode, tokens):
    tpot, itl, n = figures_of(chunk_schedule(0.25, decode, tokens))
    assert n == tokens
    assert (tpot, itl) == pytest.approx(even_figures(decode, tokens))
    assert tpot == pytest.approx(decode / (tokens - 1))


def test_one_token_has_no_tpot():
    assert chunk_schedule(0.3, 0.5, 1) == [(0.3, 1)]
    assert all(math.isnan(x) for x in even_figures(0.5, 1))
    assert reply_tokens(0.2) == 1 and reply_tokens(19.6) == 20
