"""Misusing the command line: exit 2 and one line, never a traceback; Ctrl-C: exit 130, no orphans.

Each misuse (a missing file, a directory where a file belongs, an --out that cannot be written,
a bad --set path or value, invalid or conflicting options, an unknown command) is answered with
exactly one line ``gwsim: error: ...`` on stderr, nothing on stdout, exit code 2, and nothing
written.  A long ``gwsim run`` interrupted by SIGINT (to the process, or to its whole process
group as a terminal's Ctrl-C does) exits 130 with one line, leaves no worker process behind and
no file in --out.  CI runs as root, so unwritable places are made with a path under a file
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
        ("run.replications=abc", "{md1}: run.replications: expected an integer, got 'abc'"),
        ("run.replications=0", "{md1}: run.replications: expected an integer > 0, got 0"),
        ("run.duration=-5s", "{md1}: run.duration: expected a non-negative duration, got '-5s'"),
        ("workload.mix.stage=0.4", "{md1}: workload.mix: expected mix shares >= 0 that sum to 1, got sum 0.4"),
        ("fallback.mode=sometimes", "{md1}: fallback.mode: expected 'none', 'sequential', 'race' or 'hedge', got 'sometimes'"),
        ("gateway.cpu_worker=4", "{md1}: gateway.cpu_worker: expected a known key (did you mean 'cpu_workers'?), got unknown key 'cpu_worker'"),
        ("endpoints.stage.classes.0.provider=ghost", "{md1}: endpoints.stage.classes[0].provider: expected a provider from ['server'], got unknown provider 'ghost'"),
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
    )
    try:
        # --out is created after the scenario is loaded, just before the replications start
        assert _wait(lambda: out.is_dir() or proc.poll() is not None), "the run never started"
        if workers > 1:
            assert _wait(lambda: len(_children(proc.pid)) >= workers or proc.poll() is not None), "no worker processes"
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()
        kids = _children(proc.pid)
        if workers > 1:
            assert len(kids) >= workers
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines() == ["gwsim: error: interrupted; finished work was kept"]
    assert stdout == b""
    assert _wait(lambda: not any(_alive(k) for k in kids), 10.0), f"orphan workers: {[k for k in kids if _alive(k)]}"
    assert list(out.iterdir()) == []  # nothing half-written (and no temporary files)


def test_set_accepts_inline_tables_and_arrays():
    """A TOML inline table or array after '=' is a value, not a string (--set replaces whole tables)."""
    from simulator.scenario import load_scenario

    sc = load_scenario(MD1, ['workload.arrivals={process="constant",rate="2/s"}', 'fallback.trigger_on=["timeout"]'])
    assert sc.workload.arrivals.process == "constant" and sc.workload.arrivals.rate == 2.0
    assert sc.fallback.trigger_on == ("timeout",)


@pytest.mark.parametrize(
    "error, code, expected",
    [
        (KeyboardInterrupt(), 130, "interrupted; finished work was kept"),
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
