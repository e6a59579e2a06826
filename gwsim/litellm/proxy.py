"""LiteLLM's real proxy (``litellm --config``, from the extra ``gwsim[litellm]``) as the gateway of
``gwsim measure --gateway litellm``: configured by ``gwsim export litellm`` with the emulated
providers' URLs as api_bases, started in its own process on a free loopback port with one
worker, a fresh master key (which the load generator sends) and LiteLLM's bundled model cost
map (``LITELLM_LOCAL_MODEL_COST_MAP=True``: no network at start-up).

The measurement orchestrator (``real_engine.measure``) owns the process once launched and
stops it on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gwsim.litellm.config import MASTER_KEY_ENV, export_config
from real_engine.measure import ChildProcess, MeasureError
from simulator.scenario import Scenario

#: Time from launch to the run's first arrival (LiteLLM's proxy starts in about 8 s on 2 busy
#: cores; a slower start is reported and its first arrivals are late), and the longest tolerated.
STARTUP_S = 20.0
READY_TIMEOUT_S = 90.0
#: Variables that would point the proxy's router at a shared Redis (LiteLLM reads them on its
#: own): its state would then outlive the run (least-busy counts for an hour) and be shared.
REDIS_ENV = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_SSL")
CONFIG_NAME = "litellm_config.yaml"


def check_installed(what: str = "gwsim measure --gateway litellm") -> str:
    """LiteLLM's version; UsageError (one line naming the extra) when its proxy cannot run here."""
    from gwsim.extras import require

    require("litellm", what)
    from importlib.metadata import version

    return version("litellm")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiteLLMProxy:
    """A ``real_engine.measure.GatewayLauncher`` for LiteLLM's proxy."""

    name = "litellm"
    startup_s = STARTUP_S
    ready_timeout_s = READY_TIMEOUT_S

    def __init__(self, scenario: Scenario, raw: dict[str, Any], source: str) -> None:
        self.version = check_installed()
        self.scenario = scenario
        self.raw = raw
        self.source = source
        self.key = "sk-gwsim-" + secrets.token_hex(8)
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.port = 0
        self.config_path: Path | None = None
        export_config(scenario, raw, source)  # refuse a scenario without [router] before anything starts

    def config(self, upstream_urls: dict[str, Any]) -> dict[str, Any]:
        """The exported config with the emulated providers' URLs as api_bases."""
        bases = {name: url.rstrip("/") + "/v1" for name, url in upstream_urls["providers"].items()}
        config, _ = export_config(self.scenario, self.raw, self.source, bases)
        return config

    def launch(self, upstream_urls: dict[str, Any], workdir: Path) -> ChildProcess:
        from gwsim.litellm_cmd import dump_yaml

        self.config_path = workdir / CONFIG_NAME
        self.config_path.write_text(dump_yaml(self.config(upstream_urls)))
        self.port = free_port()
        env: dict[str, str | None] = {
            **dict.fromkeys(REDIS_ENV),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            MASTER_KEY_ENV: self.key,
            "LITELLM_LOG": "ERROR",
            "NO_DOCS": "True",
        }
        argv = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(self.config_path),
                "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        return ChildProcess("litellm", argv, workdir, extra_env=env)

    def wait_ready(self, proc: ChildProcess, deadline: float) -> str:
        url = f"http://127.0.0.1:{self.port}"
        while True:
            if not proc.alive():
                raise MeasureError(f"LiteLLM's proxy exited with code {proc.popen.returncode} before it was ready: {proc.tail()}")
            try:
                with urllib.request.urlopen(url + "/health/liveliness", timeout=1.0) as resp:
                    if resp.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise MeasureError(f"LiteLLM's proxy was not ready within {READY_TIMEOUT_S:g}s: {proc.tail(2)}")
            time.sleep(0.25)


def launcher_for(scenario_path: str, overrides: list[str] | tuple[str, ...] = ()) -> LiteLLMProxy:
    """The proxy for the scenario at ``scenario_path`` (with ``--set`` overrides)."""
    from simulator.scenario import apply_overrides, load_scenario, read_scenario_data

    sc = load_scenario(scenario_path, list(overrides))
    raw = apply_overrides(read_scenario_data(scenario_path), list(overrides), str(scenario_path))
    return LiteLLMProxy(sc, raw, str(scenario_path))
