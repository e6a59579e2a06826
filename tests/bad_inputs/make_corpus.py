"""Writes the bad-input corpus: scenario files that gwsim must answer with one line and exit 2.

Each case is a small valid scenario with one thing broken (or a file that is not a scenario at
all).  The exact error line expected for each file lives in ``expected.json`` next to them,
written by hand; ``python tests/bad_inputs/make_corpus.py --check`` prints the lines gwsim gives
now next to the expected ones.  Run from anywhere; files are written next to this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BASE = """\
[run]
name = "bad"
duration = "100s"
warmup = "10s"
replications = 2
seed = 1

[workload]
mode = "open"
arrivals = { process = "poisson", rate = "5/s" }
mix = { chat = 1.0 }

[endpoints.chat]
kind = "chat_completions"
model_selection = false
classes = [{ name = "job", provider = "alpha" }]

[providers.alpha]
latency = { model = "plain", time = { dist = "exponential", mean = "100ms" } }
concurrency = 4

[fallback]
mode = "none"
max_attempts = 1
"""

# A gateway with model selection, two providers and a static fallback choice.
RICH = """\
[run]
name = "rich"
duration = "100s"
warmup = "10s"

[workload]
arrivals = { process = "poisson", rate = "5/s" }
mix = { select = 0.5, chat = 0.5 }

[endpoints.select]
kind = "select_model"
classes = [{ name = "short" }]

[endpoints.chat]
kind = "chat_completions"
classes = [{ name = "short", output_tokens = { dist = "deterministic", value = 200 } }]

[model_selection]
candidates = ["alpha", "beta"]
fallback_choice = { provider = "alpha", alternatives = ["beta"] }

[ai_service]
workers = 2
max_batch_size = 8
batch_timeout = "5ms"
per_item = { dist = "deterministic", value = "2ms" }

[providers.alpha]
latency = { model = "tokens", ttft = { dist = "lognormal", median = "300ms", p95 = "900ms" }, tokens_per_s = 80 }

[providers.beta]
latency = { model = "plain", time = { dist = "gamma", mean = "1s", cv = 0.5 } }

[fallback]
mode = "sequential"
max_attempts = 2
"""


def edit(base: str, *pairs: tuple[str, str]) -> str:
    out = base
    for old, new in pairs:
        assert old in out, old
        out = out.replace(old, new, 1)
    return out


def b(*pairs: tuple[str, str]) -> str:
    return edit(BASE, *pairs)


def r(*pairs: tuple[str, str]) -> str:
    return edit(RICH, *pairs)


EXP = 'time = { dist = "exponential", mean = "100ms" }'


def dist(text: str) -> str:
    return b((EXP, f"time = {text}"))


def nested_mixture(depth: int) -> str:
    inner = '{ dist = "deterministic", value = "1ms" }'
    for _ in range(depth):
        inner = '{ dist = "mixture", components = [{ weight = 1, of = ' + inner + " }] }"
    return inner


# name -> (category, content: str for text files, bytes for binary ones)
CASES: dict[str, tuple[str, str | bytes]] = {
    # ---------------------------------------------------------------- malformed TOML
    "toml_unclosed_table.toml": ("malformed TOML", b(("[workload]", "[workload"))),
    "toml_missing_equals.toml": ("malformed TOML", b(('duration = "100s"', 'duration "100s"'))),
    "toml_duplicate_key.toml": ("malformed TOML", b(('seed = 1\n', 'seed = 1\nseed = 2\n'))),
    "toml_duplicate_table.toml": ("malformed TOML", BASE + '\n[run]\nname = "again"\n'),
    "toml_unterminated_string.toml": ("malformed TOML", b(('name = "bad"', 'name = "bad'))),
    "toml_inline_trailing_comma.toml": ("malformed TOML", b(("mix = { chat = 1.0 }", "mix = { chat = 1.0, }"))),
    "toml_unclosed_array.toml": ("malformed TOML", b(('classes = [{ name = "job", provider = "alpha" }]', 'classes = [{ name = "job", provider = "alpha" }'))),
    "toml_bad_escape.toml": ("malformed TOML", b(('name = "bad"', 'name = "C:\\Users\\bad"'))),
    "toml_nul_byte.toml": ("malformed TOML", b(('name = "bad"', 'name = "b\x00ad"'))),
    "toml_json_instead.toml": ("malformed TOML", '{"run": {"duration": "100s"}, "workload": {"mix": {"chat": 1.0}}}\n'),
    "toml_yaml_instead.toml": ("malformed TOML", "run:\n  duration: 100s\nworkload:\n  mix:\n    chat: 1.0\n"),
    # ---------------------------------------------------------------- empty files, binary junk
    "empty.toml": ("empty or junk", ""),
    "whitespace_only.toml": ("empty or junk", "\n\n   \t\n"),
    "comments_only.toml": ("empty or junk", "# a scenario will go here\n# one day\n"),
    "binary_junk.bin": ("empty or junk", bytes((i * 97 + 13) % 256 for i in range(512))),
    "binary_png.toml": ("empty or junk", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"),
    "utf16.toml": ("empty or junk", BASE.encode("utf-16")),
    "latin1.toml": ("empty or junk", b(('name = "bad"', 'name = "caf\u00e9"')).encode("latin-1")),
    # ---------------------------------------------------------------- wrong types
    "type_duration_number.toml": ("wrong type", b(('duration = "100s"', "duration = 100"))),
    "type_replications_string.toml": ("wrong type", b(("replications = 2", 'replications = "two"'))),
    "type_replications_float.toml": ("wrong type", b(("replications = 2", "replications = 2.5"))),
    "type_rate_number.toml": ("wrong type", b(('rate = "5/s"', "rate = 5"))),
    "type_mix_array.toml": ("wrong type", b(("mix = { chat = 1.0 }", 'mix = ["chat"]'))),
    "type_mix_share_string.toml": ("wrong type", b(("mix = { chat = 1.0 }", 'mix = { chat = "all" }'))),
    "type_classes_table.toml": ("wrong type", b(('classes = [{ name = "job", provider = "alpha" }]', 'classes = { name = "job", provider = "alpha" }'))),
    "type_bool_string.toml": ("wrong type", b(("model_selection = false", 'model_selection = "maybe"'))),
    "type_dist_string.toml": ("wrong type", dist('"100ms"')),
    "type_run_array.toml": ("wrong type", b(('[run]\nname = "bad"\nduration = "100s"\nwarmup = "10s"\nreplications = 2\nseed = 1\n', 'run = [1, 2]\n'))),
    "type_name_nested_array.toml": ("wrong type", b(('name = "bad"', "name = [[[[1]]]]"))),
    "type_concurrency_date.toml": ("wrong type", b(("concurrency = 4", "concurrency = 1979-05-27"))),
    # ---------------------------------------------------------------- unknown keys
    "unknown_top_level.toml": ("unknown key", BASE + '\n[colour]\nscheme = "dark"\n'),
    "unknown_typo.toml": ("unknown key", BASE + "\n[gateway]\ncpu_worker = 4\n"),
    "unknown_in_distribution.toml": ("unknown key", dist('{ dist = "exponential", mean = "100ms", sd = "10ms" }')),
    "unknown_in_provider.toml": ("unknown key", b(("concurrency = 4", "concurrency = 4\ntimeout = \"1s\""))),
    "unknown_nested.toml": ("unknown key", b(("concurrency = 4", "concurrency = 4\npool = { max_idle = 3 }"))),
    # ---------------------------------------------------------------- missing keys
    "missing_run.toml": ("missing key", b(('[run]\nname = "bad"\nduration = "100s"\nwarmup = "10s"\nreplications = 2\nseed = 1\n', ""))),
    "missing_duration.toml": ("missing key", b(('duration = "100s"\n', ""))),
    "missing_providers.toml": ("missing key", b(('[providers.alpha]\nlatency = { model = "plain", time = { dist = "exponential", mean = "100ms" } }\nconcurrency = 4\n', ""))),
    "missing_mix.toml": ("missing key", b(("mix = { chat = 1.0 }\n", ""))),
    "missing_latency.toml": ("missing key", b(('latency = { model = "plain", time = { dist = "exponential", mean = "100ms" } }\n', ""))),
    # ---------------------------------------------------------------- out of range
    "range_replications_zero.toml": ("out of range", b(("replications = 2", "replications = 0"))),
    "range_seed_negative.toml": ("out of range", b(("seed = 1", "seed = -1"))),
    "range_concurrency_negative.toml": ("out of range", b(("concurrency = 4", "concurrency = -4"))),
    "range_probability.toml": ("out of range", b(('provider = "alpha" }', 'provider = "alpha", semantic_cache_hit = 2.0 }'))),
    "range_fault_error_rate.toml": ("out of range", b(("concurrency = 4", 'concurrency = 4\nfaults = [{ start = "10s", end = "20s", kind = "errors", error_rate = 1.5 }]'))),
    "range_enum_over_limit.toml": ("out of range", b(("concurrency = 4", 'concurrency = 4\nover_limit = "drop"'))),
    "range_enum_mode.toml": ("out of range", b(('mode = "open"', 'mode = "half-open"'))),
    "range_warmup_after_duration.toml": ("out of range", b(('warmup = "10s"', 'warmup = "200s"'))),
    "range_fault_end_before_start.toml": ("out of range", b(("concurrency = 4", 'concurrency = 4\nfaults = [{ start = "20s", end = "10s", kind = "outage" }]'))),
    "range_error_probabilities_sum.toml": ("out of range", b(("concurrency = 4", 'concurrency = 4\nerrors = { "500" = 0.7, "503" = 0.6 }'))),
    "range_error_status.toml": ("out of range", b(("concurrency = 4", 'concurrency = 4\nerrors = { "404" = 0.1 }'))),
    "range_trigger_kind.toml": ("out of range", b(("max_attempts = 1", 'max_attempts = 1\ntrigger_on = ["timeout", "teapot"]'))),
    "range_endpoint_kind.toml": ("out of range", b(('kind = "chat_completions"', 'kind = "embeddings"'))),
    # ---------------------------------------------------------------- negative durations and rates
    "negative_duration.toml": ("negative duration", b(('duration = "100s"', 'duration = "-100s"'))),
    "negative_warmup.toml": ("negative duration", b(('warmup = "10s"', 'warmup = "-10s"'))),
    "negative_client_timeout.toml": ("negative duration", b(('mode = "open"', 'mode = "open"\nclient_timeout = "-5s"'))),
    "negative_fault_start.toml": ("negative duration", b(("concurrency = 4", 'concurrency = 4\nfaults = [{ start = "-1s", end = "10s", kind = "outage" }]'))),
    "negative_rate.toml": ("negative duration", b(('rate = "5/s"', 'rate = "-5/s"'))),
    "negative_dist_mean.toml": ("negative duration", dist('{ dist = "exponential", mean = "-100ms" }')),
    # ---------------------------------------------------------------- malformed distributions
    "dist_unknown_family.toml": ("malformed distribution", dist('{ dist = "pareto", alpha = 2, scale = "1s" }')),
    "dist_missing_tag.toml": ("malformed distribution", dist('{ mean = "100ms" }')),
    "dist_bad_unit.toml": ("malformed distribution", dist('{ dist = "exponential", mean = "5 parsecs" }')),
    "dist_exponential_zero.toml": ("malformed distribution", dist('{ dist = "exponential", mean = "0ms" }')),
    "dist_lognormal_incomplete.toml": ("malformed distribution", dist('{ dist = "lognormal", median = "100ms" }')),
    "dist_lognormal_p95_below_median.toml": ("malformed distribution", dist('{ dist = "lognormal", median = "100ms", p95 = "50ms" }')),
    "dist_lognormal_both_forms.toml": ("malformed distribution", dist('{ dist = "lognormal", median = "100ms", p95 = "300ms", mu = -2.0, sigma = 0.5 }')),
    "dist_uniform_reversed.toml": ("malformed distribution", dist('{ dist = "uniform", low = "200ms", high = "100ms" }')),
    "dist_gamma_zero_cv.toml": ("malformed distribution", dist('{ dist = "gamma", mean = "100ms", cv = 0 }')),
    "dist_weibull_zero_shape.toml": ("malformed distribution", dist('{ dist = "weibull", shape = 0, scale = "100ms" }')),
    "dist_mixture_empty.toml": ("malformed distribution", dist('{ dist = "mixture", components = [] }')),
    "dist_mixture_zero_weight.toml": ("malformed distribution", dist('{ dist = "mixture", components = [{ weight = 0, of = { dist = "deterministic", value = "1ms" } }] }')),
    "dist_empirical_missing_file.toml": ("malformed distribution", dist('{ dist = "empirical", file = "data/no_such_samples.csv", unit = "ms" }')),
    "dist_empirical_bad_samples.toml": ("malformed distribution", dist('{ dist = "empirical", file = "data/bad_samples.csv", unit = "ms" }')),
    "dist_empirical_directory.toml": ("malformed distribution", dist('{ dist = "empirical", file = "data", unit = "ms" }')),
    # ---------------------------------------------------------------- inconsistent configurations
    "inconsistent_mix_sum.toml": ("inconsistent config", b(("mix = { chat = 1.0 }", "mix = { chat = 0.5 }"))),
    "inconsistent_mix_negative.toml": ("inconsistent config", r(("mix = { select = 0.5, chat = 0.5 }", "mix = { select = 1.5, chat = -0.5 }"))),
    "inconsistent_mix_unknown_endpoint.toml": ("inconsistent config", b(("mix = { chat = 1.0 }", "mix = { chat = 0.5, embed = 0.5 }"))),
    "inconsistent_fallback_unknown_provider.toml": ("inconsistent config", r(('fallback_choice = { provider = "alpha"', 'fallback_choice = { provider = "gamma"'))),
    "inconsistent_fallback_alternative_unknown.toml": ("inconsistent config", r(('alternatives = ["beta"]', 'alternatives = ["beta", "delta"]'))),
    "inconsistent_candidate_unknown.toml": ("inconsistent config", r(('candidates = ["alpha", "beta"]', 'candidates = ["alpha", "omega"]'))),
    "inconsistent_class_provider_unknown.toml": ("inconsistent config", b(('provider = "alpha" }', 'provider = "zeta" }'))),
    "inconsistent_no_provider.toml": ("inconsistent config", b(('classes = [{ name = "job", provider = "alpha" }]', 'classes = [{ name = "job" }]'))),
    "inconsistent_open_without_arrivals.toml": ("inconsistent config", b(('arrivals = { process = "poisson", rate = "5/s" }\n', ""))),
    "inconsistent_closed_without_users.toml": ("inconsistent config", b(('mode = "open"', 'mode = "closed"'))),
    "inconsistent_duplicate_class.toml": ("inconsistent config", b(('classes = [{ name = "job", provider = "alpha" }]', 'classes = [{ name = "job", provider = "alpha" }, { name = "job", provider = "alpha" }]'))),
    "inconsistent_no_providers.toml": ("inconsistent config", b(('[providers.alpha]\nlatency = { model = "plain", time = { dist = "exponential", mean = "100ms" } }\nconcurrency = 4\n', "[providers]\n"))),
    # ---------------------------------------------------------------- absurd numbers
    "absurd_replications_2e70.toml": ("absurd number", b(("replications = 2", f"replications = {2**70}"))),
    "absurd_concurrency_hex.toml": ("absurd number", b(("concurrency = 4", "concurrency = 0x" + "f" * 600))),
    "absurd_seed_5000_digits.toml": ("absurd number", b(("seed = 1", "seed = " + "9" * 5000))),
    "absurd_mix_1e309.toml": ("absurd number", b(("mix = { chat = 1.0 }", "mix = { chat = 1e309 }"))),
    "absurd_factor_nan.toml": ("absurd number", b(('mode = "open"', 'mode = "open"\nrate_profile = [{ at = "50s", factor = nan }]'))),
    "absurd_latency_factor_neg_inf.toml": ("absurd number", b(("concurrency = 4", 'concurrency = 4\nfaults = [{ start = "1s", end = "2s", kind = "slow", latency_factor = -inf }]'))),
    "absurd_duration_1e309s.toml": ("absurd number", b(('duration = "100s"', 'duration = "1e309s"'))),
    "absurd_rate_1e400.toml": ("absurd number", b(('rate = "5/s"', 'rate = "1e400/s"'))),
    "absurd_lognormal_mu.toml": ("absurd number", dist('{ dist = "lognormal", mu = 1000.0, sigma = 1.0 }')),
    "absurd_gamma_tiny_cv.toml": ("absurd number", dist('{ dist = "gamma", mean = "100ms", cv = 1e-300 }')),
    "absurd_weibull_tiny_shape.toml": ("absurd number", dist('{ dist = "weibull", shape = 0.001, scale = "100ms" }')),
    "absurd_mixture_weights.toml": ("absurd number", dist('{ dist = "mixture", components = [{ weight = 1e308, of = { dist = "deterministic", value = "1ms" } }, { weight = 1e308, of = { dist = "deterministic", value = "2ms" } }] }')),
    "absurd_burst_size_2e62.toml": ("absurd number", b(('arrivals = { process = "poisson", rate = "5/s" }', f'arrivals = {{ process = "burst", size = {2**62}, every = "1s" }}'))),
    "absurd_drain_1e300s.toml": ("absurd number", b(('warmup = "10s"', 'warmup = "10s"\ndrain = "1e300s"'))),
    "absurd_window_1us.toml": ("absurd number", b(('warmup = "10s"', 'warmup = "10s"\nwindow = "1us"'))),
    "absurd_requests_1e10.toml": ("absurd number", b(('rate = "5/s"', 'rate = "1000000/s"'), ('duration = "100s"', 'duration = "10000s"'))),
    "absurd_rate_1e9.toml": ("absurd number", b(('rate = "5/s"', 'rate = "1e9/s"'))),
    "absurd_replications_1e6.toml": ("absurd number", b(("replications = 2", "replications = 1000000"))),
    "type_replications_bool.toml": ("wrong type", b(("replications = 2", "replications = true"))),
    "type_concurrency_bool.toml": ("wrong type", b(("concurrency = 4", "concurrency = false"))),
    # ---------------------------------------------------------------- deep nesting
    "deep_arrays.toml": ("deep nesting", b(('name = "bad"', 'name = ' + "[" * 3000 + "]" * 3000))),
    "deep_inline_tables.toml": ("deep nesting", BASE + "\n[gateway]\nx = " + "{ a = " * 2000 + "1" + " }" * 2000 + "\n"),
    "deep_dotted_table.toml": ("deep nesting", BASE + "\n[gateway." + ".".join(["a"] * 200) + "]\nb = 1\n"),
    "deep_mixture.toml": ("deep nesting", dist(nested_mixture(40))),
    # ---------------------------------------------------------------- several problems: the first five shown
    "several_two.toml": ("several problems", b(('duration = "100s"', 'duration = 100'), ("seed = 1", "seed = -1"))),
    "several_eight.toml": ("several problems", b(
        ('duration = "100s"', 'duration = 100'), ("seed = 1", "seed = -1"), ("replications = 2", "replications = 0"),
        ('rate = "5/s"', "rate = 5"), ("concurrency = 4", 'concurrency = "x"'), ("max_attempts = 1", "max_attempts = 0"),
        ('name = "bad"', "name = 3"), ('mean = "100ms"', 'mean = "100 parsecs"'),
    )),
}

DATA = {"data/bad_samples.csv": "latency_ms\n12.5\n13.1\nfast\n"}


def write() -> None:
    for name, (_, content) in CASES.items():
        path = HERE / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            # newline="" keeps the bytes exactly as written (no platform translation)
            with path.open("w", encoding="utf-8", newline="") as handle:
                handle.write(content)
    for name, content in DATA.items():
        (HERE / name).parent.mkdir(exist_ok=True)
        (HERE / name).write_text(content)


def check() -> int:
    """Print the line gwsim gives for each file, marking those that differ from expected.json."""
    import os

    from simulator.errors import ScenarioError
    from simulator.scenario import load_scenario

    expected = json.loads((HERE / "expected.json").read_text()) if (HERE / "expected.json").exists() else {}
    os.chdir(HERE)
    bad = 0
    for name, (category, _) in CASES.items():
        try:
            load_scenario(name)
            line = "<valid>"
        except ScenarioError as exc:
            line = str(exc)
        want = expected.get(name, {}).get("error")
        mark = "  " if line == want else "!!"
        bad += line != want
        print(f"{mark} {name} [{category}]\n     {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(check())
    write()
