"""A scenario's [router] as a LiteLLM proxy config and back: export then import gives the same
scenario; a plain LiteLLM config imports with one warning line per key gwsim does not model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gwsim.litellm.config import api_base_env, export_config, import_config
from simulator.errors import ScenarioError
from simulator.scenario import scenario_from_data

TOKENS = {"model": "tokens", "ttft": {"dist": "lognormal", "median": "300ms", "p95": "900ms"}, "tokens_per_s": 80}
FULL = {
    "run": {"name": "full", "duration": "120s", "warmup": "10s", "replications": 3, "seed": 9},
    "workload": {"arrivals": {"process": "poisson", "rate": "8/s"}, "mix": {"chat": 1.0}, "client_timeout": "30s"},
    "endpoints": {"chat": {"kind": "chat_completions", "model_selection": False, "classes": [
        {"name": "short", "model": "gpt-4o", "weight": 3, "output_tokens": {"dist": "deterministic", "value": 40}},
        {"name": "long", "model": "claude-3.5", "output_tokens": {"dist": "exponential", "mean": 400}},
    ]}},
    "gateway": {"cpu_workers": 1, "cpu_per_request": {"dist": "deterministic", "value": "2ms"}},
    "providers": {
        "azure-east": {"latency": TOKENS, "errors": {"429": 0.05}},
        "openai": {"latency": TOKENS, "concurrency": 8, "faults": [{"kind": "slow", "start": "30s", "end": "60s", "latency_factor": 4}]},
        "anthropic": {"latency": {"model": "plain", "time": {"dist": "deterministic", "value": "1s"}}},
    },
    "router": {
        "strategy": "latency-based-routing", "num_retries": 3, "retry_after": "1s", "timeout": "20s",
        "allowed_fails": 2, "allowed_fails_policy": {"rate_limit": 5, "timeout": 1},
        "retry_policy": {"rate_limit": 4, "default": 1}, "cooldown_time": "30s", "disable_cooldowns": False,
        "fallbacks": {"gpt-4o": ["claude-3.5"]}, "max_fallbacks": 2, "latency_buffer": 0.2, "latency_window": 20,
        "groups": {
            "gpt-4o": {"deployments": [
                {"provider": "azure-east", "model": "azure/gpt-4o", "weight": 2, "rpm": 600, "tpm": 100000,
                 "max_parallel_requests": 50, "cooldown_time": "10s"},
                {"provider": "openai", "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
            ]},
            "claude-3.5": {"deployments": [{"provider": "anthropic", "model": "anthropic/claude-3-5-sonnet"}]},
        },
    },
}


def test_export_then_import_gives_the_scenario_back():
    sc = scenario_from_data(FULL, "full.toml")
    config, warnings = export_config(sc, FULL, "full.toml", {"openai": "http://127.0.0.1:9999/v1"})
    assert warnings == []
    text = yaml.safe_dump(config, sort_keys=False)
    back, warnings = import_config(yaml.safe_load(text), "full.yaml")
    assert warnings == []
    assert scenario_from_data(back, "back") == sc
    # what the proxy reads, under LiteLLM's names
    first = config["model_list"][0]
    assert first["model_name"] == "gpt-4o" and first["model_info"] == {"id": "gpt-4o-0", "gwsim_provider": "azure-east"}
    assert first["litellm_params"]["api_base"] == f"os.environ/{api_base_env('azure-east')}" == "os.environ/GWSIM_API_BASE_AZURE_EAST"
    assert config["model_list"][1]["litellm_params"]["api_base"] == "http://127.0.0.1:9999/v1"
    rs = config["router_settings"]
    assert rs["routing_strategy"] == "latency-based-routing" and rs["fallbacks"] == [{"gpt-4o": ["claude-3.5"]}]
    assert rs["retry_policy"] == {"RateLimitErrorRetries": 4, "DefaultRetries": 1}
    assert rs["allowed_fails_policy"] == {"RateLimitErrorAllowedFails": 5, "TimeoutErrorAllowedFails": 1}
    assert rs["routing_strategy_args"] == {"lowest_latency_buffer": 0.2, "max_latency_list_size": 20}
    assert (rs["cooldown_time"], rs["timeout"], rs["retry_after"]) == (30.0, 20.0, 1.0)


def test_export_names_what_the_proxy_does_not_have():
    data = {**FULL, "gateway": {"max_in_flight": 10, "rate_limit": {"limit": 5, "window": "1s"}},
            "endpoints": {**FULL["endpoints"], "select": {"kind": "select_model", "classes": [{"name": "s"}]}},
            "workload": {**FULL["workload"], "mix": {"chat": 0.5, "select": 0.5}}}
    _, warnings = export_config(scenario_from_data(data, "x.toml"), data, "x.toml")
    assert warnings == [
        "x.toml: endpoints.select is not honoured by LiteLLM's proxy (it has no select-model endpoint)",
        "x.toml: gateway.rate_limit is not honoured by LiteLLM's proxy (its limits are per key and per deployment (rpm, tpm))",
        "x.toml: gateway.max_in_flight is not honoured by LiteLLM's proxy (it has no admission limit; max_parallel_requests is per deployment)",
    ]
    with pytest.raises(ScenarioError, match="expected a \\[router\\] table"):
        plain = {k: v for k, v in FULL.items() if k != "router"}
        plain["endpoints"] = {"chat": {"kind": "chat_completions", "classes": [{"name": "c"}]}}
        export_config(scenario_from_data(plain, "p.toml"), plain, "p.toml")


PLAIN_CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: azure/gpt-4o, api_base: https://x.openai.azure.com, api_key: os.environ/AZURE_KEY,
                     api_version: "2024-02-01", rpm: 900}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_KEY, tpm: 200000}
    model_info: {id: oai-direct, base_model: gpt-4o}
router_settings:
  routing_strategy: usage-based-routing-v2
  redis_host: localhost
  num_retries: 1
  enable_pre_call_checks: true
litellm_settings:
  request_timeout: 45
  cache: true
  drop_params: true
general_settings:
  master_key: sk-1234
  database_url: postgres://db
"""


def test_a_plain_litellm_config_imports_with_one_warning_per_unmodelled_key(tmp_path):
    data, warnings = import_config(yaml.safe_load(PLAIN_CONFIG), "c.yaml")
    sc = scenario_from_data(data, "c.yaml")
    assert sc.router.strategy == "usage-based-routing-v2" and sc.router.num_retries == 1 and sc.router.timeout == 45.0
    assert [(d.provider, d.model, d.rpm, d.tpm) for d in sc.router.groups["gpt-4o"].deployments] == [
        ("gpt-4o-0", "azure/gpt-4o", 900, None), ("oai-direct", "openai/gpt-4o", None, 200000)]
    assert [c.model for c in sc.endpoints["chat"].classes] == ["gpt-4o"]
    unmodelled = [w for w in warnings if "is not modelled by gwsim" in w]
    assert [w.split(": ")[1].split(" ")[0] for w in unmodelled] == [
        "model_list[0].litellm_params.api_version", "model_list[1].model_info.base_model", "router_settings.redis_host",
        "router_settings.enable_pre_call_checks", "litellm_settings.cache", "general_settings.database_url"]
    placeholders = [w for w in warnings if "placeholder" in w]
    assert len(placeholders) == 3 and all("\n" not in w for w in warnings)  # two latencies, the traffic


@pytest.mark.parametrize("text, message", [
    ("model_list: 3", "c.yaml: model_list: expected a list of deployments, got 3"),
    ("model_list:\n  - litellm_params: {model: x}", "c.yaml: model_list[0].model_name: expected a model name, got nothing"),
    ("model_list:\n  - {model_name: g, litellm_params: {model: openai/x, rpm: fast}}",
     "c.yaml: model_list[0].litellm_params.rpm: expected an integer, got 'fast'"),
])
def test_bad_configs_get_one_line(text, message):
    with pytest.raises(ScenarioError) as exc:
        import_config(yaml.safe_load(text), "c.yaml")
    assert str(exc.value) == message


def test_cli_export_and_import_round_trip(tmp_path):
    scenario = tmp_path / "full.toml"
    import tomli_w

    scenario.write_text(tomli_w.dumps(FULL))
    gwsim = [str(Path(sys.executable).with_name("gwsim"))]
    out = subprocess.run([*gwsim, "export", "litellm", str(scenario), "-o", str(tmp_path / "c.yaml")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == f"wrote {tmp_path / 'c.yaml'}", out.stderr
    back = subprocess.run([*gwsim, "import", "litellm", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "back.toml")], capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    from simulator.scenario import load_scenario

    assert load_scenario(tmp_path / "back.toml") == load_scenario(scenario)
    (tmp_path / "bad.yaml").write_text("model_list: [\n")
    bad = subprocess.run([*gwsim, "import", "litellm", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "x.toml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "expected valid YAML" in bad.stderr
    assert not (tmp_path / "x.toml").exists()


SUITE = Path(__file__).resolve().parents[1] / "scenarios" / "litellm"


@pytest.mark.parametrize("config", sorted(SUITE.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_shipped_config_imports_as_its_scenario(config):
    from simulator.scenario import apply_profile, load_scenario

    data, warnings = import_config(yaml.safe_load(config.read_text()), str(config))
    assert warnings == []
    # the suite's scenarios name the machine profile, which load_scenario merges in
    data = apply_profile(data, SUITE, str(config))
    assert scenario_from_data(data, str(config), SUITE) == load_scenario(config.with_suffix(".toml"))


def test_the_suite_has_its_configs():
    assert len(list(SUITE.glob("*.yaml"))) == len(list(SUITE.glob("*.toml"))) >= 6


@pytest.mark.parametrize("scenario", sorted(SUITE.glob("*.toml")), ids=lambda p: p.stem)
def test_each_shipped_scenario_exports_as_its_config_and_round_trips(scenario):
    """The shipped config is what export writes today (not a stale copy), and importing the
    export gives the scenario back."""
    from gwsim.litellm_cmd import export_litellm
    from simulator.scenario import apply_profile, load_scenario

    config, warnings = export_litellm(str(scenario))
    assert warnings == []
    assert config == yaml.safe_load(scenario.with_suffix(".yaml").read_text())
    back, warnings = import_config(yaml.safe_load(yaml.safe_dump(config, sort_keys=False)), "exported.yaml")
    assert warnings == []
    assert back["profile"] == "profiles/this_machine.toml"
    back = apply_profile(back, SUITE, "exported.yaml")
    assert scenario_from_data(back, "exported.yaml", SUITE) == load_scenario(scenario)
