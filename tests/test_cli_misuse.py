"""Misusing the command line: exit 2 and one line, never a traceback; Ctrl-C: exit 130, no orphans.

Each misuse (a missing file, a directory where a file belongs, an --out that cannot be written,
a bad --set path or value, invalid or conflicting options, an unknown command) is answered with
exactly one line ``gwsim: error: ...`` on stderr, nothing on stdout, exit code 2, and nothing
written.  A long ``gwsim run``, ``sweep`` or ``measure`` interrupted by SIGINT (to the process,
or to its whole process group as a terminal's Ctrl-C does) exits 130, leaves no child process
behind, and keeps (writes) exactly what had finished: the finished replications of a run, the
finished points of a sweep, every request a measurement sent, each counted once.  CI runs as root, so unwritable places are made with a path under a file
rather than with permissions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gwsim.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MD1 = ROOT / "scenarios" / "validation" / "md1.toml"
MM10 = ROOT / "scenarios" / "validation" / "mm10.toml"
GWSIM = [sys.executable, "-m", "gwsim.cli"]
PREFIX = "gwsim: error: "


def _run_in_process(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args, prog_name="gwsim")
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _assert_one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX)
    return lines[0][len(PREFIX) :]


# ----------------------------------------------------------------------------- files


def test_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    line = _assert_one_error_line(*_run_in_process(["run", str(missing)], capsys))
    assert line == f"{missing}: expected a scenario file, got nothing at that path"


def test_directory_where_a_file_belongs(capsys, tmp_path):
    line = _assert_one_error_line(*_run_in_process(["run", str(tmp_path)], capsys))
    assert line == f"{tmp_path}: expected a scenario file, got a directory"


def test_device_where_a_file_belongs(capsys):
    line = _assert_one_error_line(*_run_in_process(["run", os.devnull], capsys))
    assert line == f"{os.devnull}: expected a regular scenario file, got a device, FIFO or socket"


def test_compare_with_a_missing_second_file(capsys, tmp_path):
    missing = tmp_path / "b.toml"
    line = _assert_one_error_line(*_run_in_process(["compare", str(MD1), str(missing)], capsys))
    assert line == f"{missing}: expected a scenario file, got nothing at that path"


# ----------------------------------------------------------------------------- --out


def test_out_is_an_existing_file(capsys, tmp_path):
    target = tmp_path / "results"
    target.write_text("keep me")
    line = _assert_one_error_line(*_run_in_process(["run", str(MD1), "--out", str(target)], capsys))
    assert line == f"--out {target}: expected a directory, got a file"
    assert target.read_text() == "keep me"


def test_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / "results"
    line = _assert_one_error_line(*_run_in_process(["run", str(MD1), "--out", str(target)], capsys))
    assert line == f"--out {target}: expected a writable directory, got not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_schema_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / "schema.json"
    line = _assert_one_error_line(*_run_in_process(["schema", "--out", str(target)], capsys))
    assert line == f"{target}: expected a writable location, got not a directory"


def test_schema_out_is_a_directory(capsys, tmp_path):
    line = _assert_one_error_line(*_run_in_process(["schema", "--out", str(tmp_path)], capsys))
    assert line == f"{tmp_path}: expected a file path, got a directory"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- --set


@pytest.mark.parametrize(
    "override, expected",
    [
        ("run.name.x=1", "--set run.name.x=1: run.name: expected a table, got 'md1'"),
        ("replications", "--set replications: expected key.path=value, got no '='"),
        ("=3", "--set =3: expected a dotted key path such as gateway.cpu_workers, got ''"),
        ("run..seed=3", "--set run..seed=3: expected a dotted key path such as gateway.cpu_workers, got 'run..seed'"),
        (
            "endpoints.stage.classes.7.name=x",
            "--set endpoints.stage.classes.7.name=x: endpoints.stage.classes.7: expected an index from 0 to 0, got '7'",
        ),
        ("endpoints.stage.classes.first.name=x", "--set endpoints.stage.classes.first.name=x: endpoints.stage.classes.first: expected an index from 0 to 0, got 'first'"),
        ("run.duration=nan", "--set run.duration=nan: run.duration: expected a finite number, got nan"),
        ("run.seed=1e999", "--set run.seed=1e999: run.seed: expected a finite number, got inf"),
        ("run.seed=" + "9" * 30, "--set run.seed=" + "9" * 30 + ": run.seed: expected an integer that fits in 64 bits, got " + "9" * 30),
        ("run.replications=abc", "--set run.replications=abc: run.replications: expected an integer, got 'abc'"),
        ("run.replications=0", "--set run.replications=0: run.replications: expected an integer > 0, got 0"),
        ("run.duration=-5s", "--set run.duration=-5s: run.duration: expected a non-negative duration, got '-5s'"),
        ("workload.mix.stage=0.4", "--set workload.mix.stage=0.4: workload.mix: expected mix shares >= 0 that sum to 1, got sum 0.4"),
        ("fallback.mode=sometimes", "--set fallback.mode=sometimes: fallback.mode: expected 'none', 'sequential', 'race' or 'hedge', got 'sometimes'"),
        ("gateway.cpu_worker=4", "--set gateway.cpu_worker=4: gateway.cpu_worker: expected a known key (did you mean 'cpu_workers'?), got unknown key 'cpu_worker'"),
        ("endpoints.stage.classes.0.provider=ghost", "--set endpoints.stage.classes.0.provider=ghost: endpoints.stage.classes[0].provider: expected a provider from ['server'], got unknown provider 'ghost'"),
        # beside a key the command line set: the file and the --set
        ("run.duration=300s", "{md1} with --set run.duration=300s: run.warmup: expected warmup shorter than duration, got warmup=500.0s duration=300.0s"),
        ("run.duration=5", "--set run.duration=5: run.duration: expected a duration with a unit of us, ms, s, m or h, such as '250ms' or '3s', got 5"),
    ],
)
def test_bad_set(override, expected, capsys, tmp_path):
    out = tmp_path / "out"
    line = _assert_one_error_line(*_run_in_process(["run", str(MD1), "--set", override, "--out", str(out)], capsys))
    assert line == expected.format(md1=MD1)
    assert not out.exists()


def test_set_value_with_a_line_break(capsys):
    line = _assert_one_error_line(*_run_in_process(["run", str(MD1), "--set", "run.seed=1\nrun.name=x"], capsys))
    assert line == "--set run.seed=1 run.name=x: expected a value on one line, got a line break"


# ----------------------------------------------------------------------------- options and commands


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", str(MD1), "-n", "0"], "Invalid value for '-n' / '--replications': 0 is not in the range x>=1"),
        (["run", str(MD1), "--workers", "0"], "Invalid value for '--workers'"),
        (["run", str(MD1), "--workers", "many"], "Invalid value for '--workers'"),
        (["run", str(MD1), "--seed", "-1"], "Invalid value for '--seed'"),
        (["run", str(MD1), "--frobnicate"], "No such option"),
        (["run"], "Missing argument 'SCENARIO'"),
        (["run", str(MD1), str(MD1)], "Got unexpected extra argument"),
        (["compare", str(MD1)], "compare needs a second scenario file or at least one --set-b override"),
        (["compare", str(MD1), "--set-b", "run.seed=2", "-n", "1"], "Invalid value for '-n' / '--replications'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["--frobnicate"], "No such option"),
    ],
)
def test_invalid_options_and_commands(args, fragment, capsys):
    line = _assert_one_error_line(*_run_in_process(args, capsys))
    assert fragment in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "missing.toml"], "gwsim: error: missing.toml: expected a scenario file, got nothing at that path"),
        (["frobnicate"], "gwsim: error: No such command 'frobnicate'. (see `gwsim --help`)"),
        (["run", str(MD1), "--set", "run.name.x=1"], "gwsim: error: --set run.name.x=1: run.name: expected a table, got 'md1'"),
    ],
)
def test_misuse_as_a_real_process(args, expected, tmp_path):
    proc = subprocess.run([*GWSIM, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [expected]


def test_out_under_a_file_as_a_real_process(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = subprocess.run([*GWSIM, "run", str(MD1), "--out", str(blocker / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"gwsim: error: --out {blocker / 'out'}: expected a writable directory, got not a directory"]


# ----------------------------------------------------------------------------- SIGINT


def _as_a_foreground_job() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it.  A test run
    started in the background by a non-interactive shell (``pytest &``) has SIGINT ignored, its
    children inherit that, and Python leaves an ignored SIGINT ignored: no Ctrl-C to test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (any of its threads may have started them)."""
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for tid in tasks:
        try:
            kids.update(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is pending


def _wait(predicate, limit: float = 30.0) -> bool:
    """Poll until ``predicate()`` holds (bounded; the test fails on the assertion, not here)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see child processes")
@pytest.mark.parametrize(
    "workers, to_group",
    [(2, True), (2, False), (1, True)],
    ids=["workers-ctrl-c-to-group", "workers-sigint-to-parent", "serial-ctrl-c-to-group"],
)
def test_sigint_during_a_long_run(workers, to_group, tmp_path):
    out = tmp_path / "out"
    # four replications of 200,000 simulated seconds: minutes of work, interrupted after a moment
    proc = subprocess.Popen(
        [*GWSIM, "run", str(MM10), "-n", "4", "--workers", str(workers), "--set", "run.duration=200000s", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        preexec_fn=_as_a_foreground_job,
    )
    seen: list[float] = []

    def replications_running() -> bool:
        # --out is created after the scenario is loaded, just before the replications start;
        # half a second after it appears they are under way
        if out.is_dir() and not seen:
            seen.append(time.monotonic())
        workers_up = workers == 1 or len(_children(proc.pid)) >= workers
        return bool(seen) and workers_up and time.monotonic() - seen[0] > 0.5

    kids, stdout, stderr = _interrupt(proc, replications_running, to_group)
    if workers > 1:
        assert len(kids) >= workers
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines() == ["gwsim: error: interrupted; none of the 4 replications had finished"]
    assert stdout == b""
    assert _wait(lambda: not any(_alive(k) for k in kids), 10.0), f"orphan workers: {[k for k in kids if _alive(k)]}"
    assert list(out.iterdir()) == []  # nothing half-written (and no temporary files)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see child processes")
@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_during_a_run_keeps_the_finished_replications(workers, tmp_path):
    import json
    import re

    import pandas as pd

    out = tmp_path / "out"
    # 500 replications of about a second each (more than any machine finishes in 8 s): Ctrl-C after
    # several seconds finds some done and some not
    proc = subprocess.Popen(
        [*GWSIM, "run", str(MM10), "-n", "500", "--workers", str(workers), "--set", "run.duration=4000s",
         "--set", "run.warmup=100s", "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_as_a_foreground_job,
    )
    started = time.monotonic()
    kids, stdout, stderr = _interrupt(proc, lambda: time.monotonic() - started > 8.0, to_group=True)
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    match = re.fullmatch(rf"gwsim: error: interrupted; kept the (\d+) of 500 replications that finished in {re.escape(str(out))}",
                         err.splitlines()[-1])
    assert match, err
    kept = int(match.group(1))
    assert 1 <= kept < 500
    assert _wait(lambda: not any(_alive(k) for k in kids), 10.0), f"orphans: {[k for k in kids if _alive(k)]}"
    summary = json.loads(stdout)  # the summary of what finished is still printed (one JSON object)
    assert summary["replications"] == kept
    assert json.loads((out / "summary.json").read_text()) == summary
    records = pd.read_parquet(out / "records.parquet")
    assert records["replication"].nunique() == kept
    assert sorted(p.name for p in out.iterdir()) == ["gauges.parquet", "records.parquet", "summary.json", "timeseries.parquet"]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in _children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _interrupt(proc: subprocess.Popen, ready, to_group: bool) -> tuple[set[int], bytes, bytes]:
    """Wait until ``ready()``, send Ctrl-C (to the group or the process), and collect."""
    try:
        assert _wait(lambda: ready() or proc.poll() is not None, 60.0), "never got going"
        assert proc.poll() is None, proc.stderr.read().decode()
        kids = _descendants(proc.pid)
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return kids, stdout, stderr


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see child processes")
@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c-to-group", "sigint-to-parent"])
def test_sigint_during_a_sweep_keeps_the_finished_points(to_group, tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    # 4 points x 2 replications; the first point's replications take a moment, the last ones
    # minutes, so Ctrl-C lands with some finished and some running
    proc = subprocess.Popen(
        [*GWSIM, "sweep", str(MM10), "--param", "run.duration=300s,400s,1000000s,1000001s", "--set", "run.warmup=10s", "-n", "2", "--workers", "2",
         "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_as_a_foreground_job,
    )
    started = time.monotonic()

    def some_finished_and_workers_busy() -> bool:
        # the short points take ~1 s each; give them time, then interrupt the long ones
        return time.monotonic() - started > 12.0 and len(_children(proc.pid)) >= 2

    kids, stdout, stderr = _interrupt(proc, some_finished_and_workers_busy, to_group)
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"gwsim: error: interrupted; kept 4 replications and 2 of 4 points in {out}", err
    assert len(kids) >= 2
    assert _wait(lambda: not any(_alive(k) for k in kids), 10.0), f"orphans: {[k for k in kids if _alive(k)]}"
    reps = pd.read_parquet(out / "replications.parquet")
    points = pd.read_parquet(out / "points.parquet")
    assert sorted(reps["run.duration"].unique()) == [300.0, 400.0]
    assert len(reps) == 4 and sorted(reps["replication"]) == [0, 0, 1, 1]
    assert list(points["run.duration"]) == [300.0, 400.0]
    assert sorted(p.name for p in out.iterdir()) == ["points.parquet", "replications.parquet"]  # no chart, no temporaries


@pytest.mark.real
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see child processes")
def test_sigint_during_measure_stops_every_process_and_keeps_the_requests(tmp_path):
    import json

    import pandas as pd

    out = tmp_path / "out"
    brownout = ROOT / "scenarios" / "examples" / "brownout.toml"
    proc = subprocess.Popen(
        [*GWSIM, "measure", str(brownout), "--duration", "120", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_as_a_foreground_job,
    )
    started = time.monotonic()

    def load_running() -> bool:
        # emulators, gateway and load generator all up, and a few seconds of traffic sent
        return len(_children(proc.pid)) >= 3 and time.monotonic() - started > 10.0

    kids, stdout, stderr = _interrupt(proc, load_running, to_group=True)
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("gwsim: error: interrupted; kept the ") and last.endswith(f"each counted once in {out}"), err
    assert len(kids) >= 3
    assert _wait(lambda: not any(_alive(k) for k in kids), 10.0), f"orphans: {[k for k in kids if _alive(k)]}"
    summary = json.loads((out / "summary.json").read_text())
    records = pd.read_parquet(out / "records.parquet")
    acc = summary["accounting"]
    assert acc["sent"] > 20  # it ran a while at brownout's rate before the interrupt
    assert acc["sent"] == acc["ok"] + sum(acc["failures"].values())
    assert len(records) == acc["sent"]  # each request sent is one record, none lost
    assert int(records["id"].nunique()) == len(records)
    assert f"kept the {acc['sent']} requests" in last
    assert b"accounting: sent" in stdout


def test_set_accepts_inline_tables_and_arrays():
    """A TOML inline table or array after '=' is a value, not a string (--set replaces whole tables)."""
    from simulator.scenario import load_scenario

    sc = load_scenario(MD1, ['workload.arrivals={process="constant",rate="2/s"}', 'fallback.trigger_on=["timeout"]'])
    assert sc.workload.arrivals.process == "constant" and sc.workload.arrivals.rate == 2.0
    assert sc.fallback.trigger_on == ("timeout",)


@pytest.mark.parametrize(
    "error, code, expected",
    [
        (KeyboardInterrupt(), 130, "interrupted; nothing was written"),
        (MemoryError(), 2, "out of memory: a count or duration in the scenario is likely too large (e.g. workload.users, run.replications)"),
        (OverflowError("math range error"), 2, "OverflowError (math range error): a value in the scenario is likely too large"),
    ],
    ids=["ctrl-c", "memory", "overflow"],
)
def test_resource_exhaustion_and_interrupt_are_one_line(error, code, expected, capsys, monkeypatch):
    """What an absurd-but-valid scenario can provoke mid-run is still one line, never a traceback."""
    import simulator.api

    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(simulator.api, "run_scenario", explode)
    status, out, err = _run_in_process(["run", str(MD1)], capsys)
    assert status == code
    assert out == ""
    assert err == f"{PREFIX}{expected}\n"  # one line, no blank line before it


def test_sigint_at_any_moment_of_a_parallel_run_ends_it(tmp_path):
    """Ctrl-C lands at varied moments of a 2-worker run whose replications each return about
    several MB of records: whatever a worker is doing then (often writing its result), the run ends
    with exit 130.  Before results went through files, a worker stopped half-way through a
    result left the pool waiting for the rest of it, about one run in six."""
    for i, delay in enumerate((2.0, 2.3, 2.6, 2.9, 3.2, 3.5)):
        proc = subprocess.Popen(
            [*GWSIM, "run", str(MM10), "-n", "500", "--workers", "2", "--set", "run.duration=4000s",
             "--set", "run.warmup=100s", "--out", str(tmp_path / f"out{i}"), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_as_a_foreground_job,
        )
        started = time.monotonic()
        _, _, stderr = _interrupt(proc, lambda: time.monotonic() - started > delay, to_group=True)
        assert proc.returncode == 130, stderr.decode()
