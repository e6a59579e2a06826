"""gwsim measure --gateway litellm: the emulated providers, LiteLLM's real proxy configured by the
export, the load generator; records and accounting as for the built-in gateway, and no process
left behind, Ctrl-C included.  Skipped (one line) when the extra gwsim[litellm] is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gwsim.extras import missing

GWSIM = [str(Path(sys.executable).with_name("gwsim"))]
pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(bool(missing("litellm")), reason=f"needs gwsim[litellm] (missing: {', '.join(missing('litellm'))})"),
]

SCENARIO = """
[run]
name = "litellm-least-busy"
duration = "6s"
drain = "10s"
seed = 1

[workload]
arrivals = { process = "constant", rate = "1/s" }  # one at a time: the walk is not a race
mix = { chat = 1.0 }

[endpoints.chat]
kind = "chat_completions"
model_selection = false
classes = [{ name = "c1", model = "main", output_tokens = { dist = "deterministic", value = 10 } }]

[providers.p1]
latency = { model = "plain", time = { dist = "deterministic", value = "10ms" } }
errors = { "503" = 1.0 }

[providers.p2]
latency = { model = "plain", time = { dist = "deterministic", value = "20ms" } }

[router]
strategy = "least-busy"
num_retries = 2
groups.main.deployments = [{ provider = "p1" }, { provider = "p2" }]
"""


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(x) for x in (task / "children").read_text().split()}
            except (FileNotFoundError, ProcessLookupError):
                continue
            todo += list(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_measure_the_real_proxy_as_the_simulator_predicts_its_walk(tmp_path):
    scenario = tmp_path / "lb.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    done = subprocess.run([*GWSIM, "measure", str(scenario), "--gateway", "litellm", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["engine"] == "litellm" and summary["accounting"]["sent"] == summary["accounting"]["ok"] == 6
    records = pd.read_parquet(out / "records.parquet").sort_values("id")
    # the first request: p1 (503), p1 again (503, unlogged: LiteLLM logs one failure per request), then p2;
    # after it p1 counts one call in flight for good and least-busy sends everything to p2
    assert list(records.provider) == ["p2"] * 6
    assert list(records.attempts) == [3] + [1] * 5
    predicted = subprocess.run([*GWSIM, "run", str(scenario), "-n", "1", "--json", "--out", str(tmp_path / "sim")],
                               capture_output=True, text=True, timeout=120)
    sim = pd.read_parquet(tmp_path / "sim" / "records.parquet").sort_values("id")
    # (the simulator's constant arrivals start one gap in: one request fewer in the window)
    assert list(sim.attempts) == [3] + [1] * (len(sim) - 1) and set(sim.provider) == {"p2"} and len(sim) >= 5


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see child processes")
def test_ctrl_c_stops_the_proxy_and_keeps_the_requests(tmp_path):
    scenario = tmp_path / "lb.toml"
    scenario.write_text(SCENARIO.replace('duration = "6s"', 'duration = "120s"'))
    out = tmp_path / "out"
    proc = subprocess.Popen([*GWSIM, "measure", str(scenario), "--gateway", "litellm", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a foreground job (test_cli_misuse)
    try:
        deadline = time.monotonic() + 120
        # the proxy answering and a few requests sent: the records file of the load generator's progress
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _descendants(proc.pid)
            names = " ".join(Path(f"/proc/{k}/cmdline").read_text().replace("\0", " ") for k in kids if _alive(k))
            if "real_engine.loadgen" in names and "proxy_cli" in names:
                break
            time.sleep(0.2)
        time.sleep(18.0)  # the run starts 20 s after the proxy's launch (gwsim.litellm.proxy.STARTUP_S)
        kids = _descendants(proc.pid)
        assert len(kids) >= 3, "emulators, proxy and load generator"
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr.decode()
    end = time.monotonic() + 15
    while any(_alive(k) for k in kids) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids), "a process outlived the run"
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accounting"]
    assert acc["sent"] == acc["ok"] + sum(acc["failures"].values()) and acc["sent"] >= 1
