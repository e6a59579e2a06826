"""How a streamed chat completion reaches its client: the chunks an LLM server sends and
what a client measures on them (TTFT, TPOT, the largest gap between chunks), written once
for the simulator, the emulated providers and the load generator.

A streamed reply (OpenAI chat-completions server-sent events) carries its first token at
the time to first token, then the others as the server decodes them.  With an even decode
(the ``tokens`` latency model) a reply of ``N`` tokens decoded in ``decode_s`` has its
first token at ``first_at`` and its last at ``first_at + decode_s``, the ones between
evenly spaced, so the same request takes as long streamed as not.  A server decoding
faster than one token per ``MIN_CHUNK_S`` sends several tokens per chunk (as real servers
batch their flushes); the first chunk carries the first token alone.

What a client measures (the load generator's record fields, predicted by the simulator):
``ttft_s`` from the request's base instant to the first content chunk, ``tpot_s`` =
(last token - first token) / (N - 1), ``itl_max_s`` the largest gap between two content
chunks.  Both are undefined (NaN) for a reply of one token.
"""

from __future__ import annotations

import math

__all__ = ["MIN_CHUNK_S", "CACHED_REPLY_TOKENS", "PLAIN_REPLY_TOKENS", "chunk_schedule", "even_figures", "reply_tokens", "tokens_per_chunk", "figures_of"]

#: Shortest gap between two chunks: a faster decoder sends several tokens per chunk.
MIN_CHUNK_S = 0.02
#: Tokens of a plain latency model's reply when neither the request nor its class says.
PLAIN_REPLY_TOKENS = 16
#: Tokens of the prompt cache's stored completion (the gateway's canned reply).
CACHED_REPLY_TOKENS = 1


def reply_tokens(tokens: float) -> int:
    """Tokens a reply carries for a drawn (possibly fractional) count: rounded, at least one."""
    return max(1, int(round(tokens))) if math.isfinite(tokens) else 1


def tokens_per_chunk(gap_s: float) -> int:
    """Tokens per chunk when tokens come ``gap_s`` apart: enough that chunks are at least
    ``MIN_CHUNK_S`` apart (one when the decoder is that slow already)."""
    if gap_s <= 0:
        return 1 << 30  # an instant decode: everything after the first token in one chunk
    return max(1, math.ceil(MIN_CHUNK_S / gap_s - 1e-9))


def chunk_schedule(first_at: float, decode_s: float, tokens: int) -> list[tuple[float, int]]:
    """The content chunks of an even decode: ``(sent at, tokens in it)``, the first token
    alone at ``first_at``, the last token at ``first_at + decode_s``."""
    if tokens <= 1:
        return [(first_at, max(tokens, 1))]
    gap = decode_s / (tokens - 1)
    step = tokens_per_chunk(gap)
    out = [(first_at, 1)]
    sent = 1
    while sent < tokens:
        n = min(step, tokens - sent)
        sent += n
        out.append((first_at + (sent - 1) * gap, n))
    return out


def even_figures(decode_s: float, tokens: int) -> tuple[float, float]:
    """(tpot_s, itl_max_s) of an even decode of ``tokens`` in ``decode_s`` (NaN for one token),
    as ``figures_of(chunk_schedule(...))`` gives them, without building the schedule."""
    if tokens <= 1:
        return math.nan, math.nan
    gap = decode_s / (tokens - 1)
    return gap, min(tokens_per_chunk(gap), tokens - 1) * gap


def figures_of(chunks: list[tuple[float, int]]) -> tuple[float, float, int]:
    """(tpot_s, itl_max_s, tokens) of content chunks as a client received them: ``(at, tokens)``
    in arrival order.  TPOT spans first to last chunk over the tokens after the first."""
    tokens = sum(n for _, n in chunks)
    if len(chunks) < 2 or tokens < 2:
        return math.nan, math.nan, tokens
    gaps = max(b[0] - a[0] for a, b in zip(chunks, chunks[1:]))
    return (chunks[-1][0] - chunks[0][0]) / (tokens - 1), gaps, tokens
