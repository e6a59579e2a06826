"""A scenario's [router] as a LiteLLM proxy config, and a LiteLLM proxy config as a scenario.

Export: each deployment of each model group becomes a ``model_list`` entry (``model_name`` the
group; ``litellm_params`` its model, ``api_base`` and limits; ``model_info.id`` ``GROUP-INDEX``
and ``gwsim_provider``), the router's settings ``router_settings`` (LiteLLM's names: the
strategy, retries, retry and allowed-fails policies, cooldowns, fallbacks, the latency
strategy's buffer and window), and the proxy's key ``general_settings.master_key`` is read
from ``$LITELLM_MASTER_KEY``; the client's ``x-`` headers are forwarded to the providers (the
emulated ones read each request's class from the load generator's ``X-Gwsim-Class``).  What a LiteLLM config cannot say (the providers' latency and
faults, the traffic, the run) goes under a top-level ``gwsim`` key, which the proxy ignores
and ``import`` reads back, so export then import gives the scenario again.  An ``api_base``
not given is ``os.environ/GWSIM_API_BASE_<PROVIDER>`` (LiteLLM reads it from the
environment); ``gwsim measure --gateway litellm`` fills in the emulators' URLs.

Import reads a LiteLLM proxy config written by anyone: a deployment's provider is its
``model_info.gwsim_provider`` (else its id, else ``GROUP-INDEX``); without a ``gwsim`` key
the latencies and the traffic are placeholders, each said in a warning; every config key gwsim
does not model is named in one warning line.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from simulator.errors import ScenarioError
from simulator.policies.routing import deployment_id
from simulator.scenario import Scenario

__all__ = [
    "API_BASE_ENV_PREFIX",
    "GWSIM_KEY",
    "MASTER_KEY_ENV",
    "api_base_env",
    "export_config",
    "import_config",
]

API_BASE_ENV_PREFIX = "GWSIM_API_BASE_"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
#: Top-level key of an exported config with what LiteLLM's config cannot say.
GWSIM_KEY = "gwsim"
#: The key every exported deployment sends its (emulated) provider: the OpenAI client needs one.
EMULATED_API_KEY = "gwsim-emulated"

#: gwsim error class -> LiteLLM's RetryPolicy and AllowedFailsPolicy field names.
RETRY_POLICY_NAMES = {
    "rate_limit": "RateLimitErrorRetries", "timeout": "TimeoutErrorRetries",
    "internal_server_error": "InternalServerErrorRetries", "service_unavailable": "ServiceUnavailableErrorRetries",
    "default": "DefaultRetries",
}
ALLOWED_FAILS_NAMES = {
    "rate_limit": "RateLimitErrorAllowedFails", "timeout": "TimeoutErrorAllowedFails",
    "internal_server_error": "InternalServerErrorAllowedFails", "service_unavailable": "ServiceUnavailableErrorAllowedFails",
}
#: Deployment fields written as litellm_params of the same name.
DEPLOYMENT_PARAMS = ("weight", "rpm", "tpm", "max_parallel_requests", "input_cost_per_token", "output_cost_per_token", "cooldown_time")
#: router_settings keys that are the [router] field of the same name (seconds for durations).
ROUTER_SETTINGS = ("num_retries", "retry_after", "timeout", "allowed_fails", "cooldown_time", "disable_cooldowns", "max_fallbacks")
_DURATIONS = ("retry_after", "timeout", "cooldown_time")

#: A provider's latency when a config does not say (no gwsim key): one second, flagged.
PLACEHOLDER_LATENCY = {"model": "plain", "time": {"dist": "deterministic", "value": "1s"}}


def api_base_env(provider: str) -> str:
    """The environment variable an exported config reads a provider's api_base from."""
    return API_BASE_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", provider).upper()


def _seconds(value: float) -> str:
    return f"{value:g}s"


# --------------------------------------------------------------------------- export


def export_config(
    scenario: Scenario, raw: Mapping[str, Any], source: str, api_bases: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(the LiteLLM proxy config, warnings): ``raw`` is the scenario's own data (file plus
    overrides), kept under the ``gwsim`` key without its router."""
    router = scenario.router
    if router is None:
        raise ScenarioError(f"{source}: router: expected a [router] table to export as a LiteLLM config, got none")
    api_bases = dict(api_bases or {})
    for name in api_bases:
        if name not in scenario.providers:
            raise ScenarioError(f"--api-base {name}=...: expected a provider from {sorted(scenario.providers)}, got {name!r}")
    model_list = []
    for group, g in router.groups.items():
        for i, d in enumerate(g.deployments):
            params: dict[str, Any] = {
                "model": d.model or f"openai/{d.provider}",
                "api_base": api_bases.get(d.provider) or f"os.environ/{api_base_env(d.provider)}",
                "api_key": EMULATED_API_KEY,
            }
            for key in DEPLOYMENT_PARAMS:
                value = getattr(d, key)
                if value is not None:
                    params[key] = value
            model_list.append({"model_name": group, "litellm_params": params, "model_info": {"id": deployment_id(group, i), "gwsim_provider": d.provider}})
    settings: dict[str, Any] = {"routing_strategy": router.strategy}
    for key in ROUTER_SETTINGS:
        value = getattr(router, key)
        if value is not None:
            settings[key] = value
    if router.retry_policy:
        settings["retry_policy"] = {RETRY_POLICY_NAMES[k]: v for k, v in router.retry_policy.items()}
    if router.allowed_fails_policy:
        settings["allowed_fails_policy"] = {ALLOWED_FAILS_NAMES[k]: v for k, v in router.allowed_fails_policy.items()}
    if router.fallbacks:
        settings["fallbacks"] = [{group: list(targets)} for group, targets in router.fallbacks.items()]
    settings["routing_strategy_args"] = {"lowest_latency_buffer": router.latency_buffer, "max_latency_list_size": router.latency_window}
    rest = {k: copy.deepcopy(v) for k, v in raw.items() if k != "router"}
    config = {
        "model_list": model_list,
        "router_settings": settings,
        # x- headers go on to the providers: the emulated ones read the request's class from them
        "general_settings": {"master_key": f"os.environ/{MASTER_KEY_ENV}", "forward_client_headers_to_llm_api": True},
        GWSIM_KEY: rest,
    }
    return config, _export_warnings(scenario, source)


def _export_warnings(scenario: Scenario, source: str) -> list[str]:
    """One line per scenario setting LiteLLM's proxy does not have."""
    out = []

    def warn(path: str, why: str) -> None:
        out.append(f"{source}: {path} is not honoured by LiteLLM's proxy ({why})")

    for name, ep in scenario.endpoints.items():
        if ep.kind == "select_model":
            warn(f"endpoints.{name}", "it has no select-model endpoint")
        elif ep.path and ep.path not in ("/v1/chat/completions", "/chat/completions"):
            warn(f"endpoints.{name}.path", "it serves /v1/chat/completions")
    gw = scenario.gateway
    if gw.rate_limit is not None:
        warn("gateway.rate_limit", "its limits are per key and per deployment (rpm, tpm)")
    if gw.max_in_flight is not None:
        warn("gateway.max_in_flight", "it has no admission limit; max_parallel_requests is per deployment")
    if gw.body_limit_bytes is not None:
        warn("gateway.body_limit_bytes", "it has no body limit")
    return out


# --------------------------------------------------------------------------- import


class _Reader:
    """Walks a config, answering bad shapes with one line and collecting warnings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(self, path: str, expected: str, got: Any) -> None:
        shown = "nothing" if got is None else repr(got) if isinstance(got, (str, int, float, bool)) else f"a {type(got).__name__}"
        raise ScenarioError(f"{self.source}: {path}: expected {expected}, got {shown}")

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "a mapping", value)
        return value

    def number(self, value: Any, path: str, kind: type = float) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            self.fail(path, "an integer" if kind is int else "a number", value)
        return int(value) if kind is int else value

    def unmodelled(self, path: str, why: str = "gwsim does not model it") -> None:
        self.warnings.append(f"{self.source}: {path} is not modelled by gwsim ({why})")


def import_config(data: Any, source: str) -> tuple[dict[str, Any], list[str]]:
    """(scenario data for TOML, warnings) from a parsed LiteLLM proxy config."""
    r = _Reader(source)
    if not isinstance(data, dict):
        r.fail("(top level)", "a mapping with model_list", data)
    models = data.get("model_list")
    if not isinstance(models, list) or not models:
        r.fail("model_list", "a list of deployments", models)
    extra = r.table(data.get(GWSIM_KEY), GWSIM_KEY)
    scenario: dict[str, Any] = copy.deepcopy(extra)
    providers = scenario.setdefault("providers", {})
    if not isinstance(providers, dict):
        r.fail(f"{GWSIM_KEY}.providers", "a mapping", providers)
    groups: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(models):
        where = f"model_list[{i}]"
        entry = r.table(entry, where)
        group = entry.get("model_name")
        if not isinstance(group, str) or not group:
            r.fail(f"{where}.model_name", "a model name", group)
        params = r.table(entry.get("litellm_params"), f"{where}.litellm_params")
        info = r.table(entry.get("model_info"), f"{where}.model_info")
        deployments = groups.setdefault(group, {"deployments": []})["deployments"]
        provider = info.get("gwsim_provider") or info.get("id") or f"{group}-{len(deployments)}"
        provider = re.sub(r"[^A-Za-z0-9_-]", "-", str(provider))
        if provider not in providers:
            providers[provider] = {"latency": copy.deepcopy(PLACEHOLDER_LATENCY)}
            r.warnings.append(
                f"{source}: providers.{provider}.latency is not in a LiteLLM config: a placeholder of 1 s "
                "(measure the deployment, then `gwsim fit latency`)"
            )
        model = params.get("model")
        if not isinstance(model, str):
            r.fail(f"{where}.litellm_params.model", "a model string such as 'openai/gpt-4o'", model)
        deployment: dict[str, Any] = {"provider": provider}
        if model != f"openai/{provider}":
            deployment["model"] = model
        for key, value in params.items():
            path = f"{where}.litellm_params.{key}"
            if key in ("model", "api_base", "api_key"):
                continue
            if key == "cooldown_time":
                deployment[key] = _seconds(r.number(value, path))
            elif key in ("rpm", "tpm", "max_parallel_requests"):
                deployment[key] = r.number(value, path, int)
            elif key in DEPLOYMENT_PARAMS:
                deployment[key] = r.number(value, path)
            else:
                r.unmodelled(path)
        for key in info:
            if key not in ("id", "gwsim_provider"):
                r.unmodelled(f"{where}.model_info.{key}")
        deployments.append(deployment)
    router: dict[str, Any] = {"groups": groups}
    _router_settings(r, r.table(data.get("router_settings"), "router_settings"), router)
    _litellm_settings(r, r.table(data.get("litellm_settings"), "litellm_settings"), router)
    for key in r.table(data.get("general_settings"), "general_settings"):
        if key not in ("master_key", "forward_client_headers_to_llm_api"):
            r.unmodelled(f"general_settings.{key}")
    for key in data:
        if key not in ("model_list", "router_settings", "litellm_settings", "general_settings", GWSIM_KEY):
            r.unmodelled(key)
    scenario["router"] = router
    if not extra:
        _skeleton(r, scenario, list(groups), source)
    return scenario, r.warnings


def _router_settings(r: _Reader, settings: dict[str, Any], router: dict[str, Any]) -> None:
    for key, value in settings.items():
        path = f"router_settings.{key}"
        if key == "routing_strategy":
            router["strategy"] = value
        elif key in ("num_retries", "allowed_fails", "max_fallbacks"):
            router[key] = r.number(value, path, int)
        elif key in _DURATIONS:
            if value is not None:
                router[key] = _seconds(r.number(value, path))
        elif key == "disable_cooldowns":
            router[key] = bool(value)
        elif key in ("retry_policy", "allowed_fails_policy"):
            names = RETRY_POLICY_NAMES if key == "retry_policy" else ALLOWED_FAILS_NAMES
            ours = {v: k for k, v in names.items()}
            table = {}
            for name, count in r.table(value, path).items():
                if name in ours and count is not None:
                    table[ours[name]] = r.number(count, f"{path}.{name}", int)
                elif count is not None:
                    r.unmodelled(f"{path}.{name}")
            router[key] = table
        elif key == "fallbacks":
            if not isinstance(value, list):
                r.fail(path, "a list of {group: [groups]} mappings", value)
            fallbacks = {}
            for i, item in enumerate(value):
                for group, targets in r.table(item, f"{path}[{i}]").items():
                    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                        r.fail(f"{path}[{i}].{group}", "a list of model group names", targets)
                    fallbacks[group] = list(targets)
            router["fallbacks"] = fallbacks
        elif key == "routing_strategy_args":
            for name, arg in r.table(value, path).items():
                if name == "lowest_latency_buffer":
                    router["latency_buffer"] = r.number(arg, f"{path}.{name}")
                elif name == "max_latency_list_size":
                    router["latency_window"] = r.number(arg, f"{path}.{name}", int)
                else:
                    r.unmodelled(f"{path}.{name}")
        else:
            r.unmodelled(path)


def _litellm_settings(r: _Reader, settings: dict[str, Any], router: dict[str, Any]) -> None:
    for key, value in settings.items():
        path = f"litellm_settings.{key}"
        if key == "num_retries" and "num_retries" not in router:
            router["num_retries"] = r.number(value, path, int)
        elif key == "request_timeout" and "timeout" not in router:
            router["timeout"] = _seconds(r.number(value, path))
        elif key in ("drop_params", "set_verbose", "json_logs"):
            continue  # no effect on timing or routing
        else:
            r.unmodelled(path)


def _skeleton(r: _Reader, scenario: dict[str, Any], groups: list[str], source: str) -> None:
    """The parts a plain LiteLLM config lacks: a run, traffic and one chat class per group."""
    scenario.setdefault("run", {"name": "litellm-import", "duration": "60s"})
    scenario.setdefault("workload", {"arrivals": {"process": "poisson", "rate": "1/s"}, "mix": {"chat": 1.0}})
    scenario.setdefault("endpoints", {"chat": {
        "kind": "chat_completions", "model_selection": False,
        "classes": [{"name": re.sub(r"[^A-Za-z0-9_-]", "-", g), "model": g} for g in groups],
    }})
    r.warnings.append(
        f"{source}: workload is not in a LiteLLM config: a placeholder of 1 request/s (Poisson), one chat class per "
        "model group; set your traffic (or `gwsim fit workload` from a trace)"
    )
