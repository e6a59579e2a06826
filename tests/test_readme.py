"""The README's commands work, and the outputs it shows are what they print.

Every gwsim command in the README's shell and output blocks runs here, shortened (20 s of
simulated traffic, 2 replications, a 3 s measurement) and with its output paths moved to a
temporary directory; a command that errors fails its test.  The main job's output, the
first section's and the short tour's simulator run are compared digit for digit, so the prose
cannot drift from its numbers unnoticed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_commands import README, code_blocks, shown_commands  # noqa: E402

ROOT = README.parent
TEXT = README.read_text()
SIMULATING = {"run", "compare", "sweep", "validate", "capacity", "sensitivity"}
SHORT = ["--set", "run.duration=20s", "--set", "run.warmup=0s", "--set", "run.drain=5s"]
OUTPUT_FLAGS = {"--out", "-o", "--report"}


def _gwsim() -> list[str]:
    return [sys.executable, "-c", "from gwsim.cli import main; main()"]


def _shortened(command: str, tmp: Path) -> tuple[list[str], str | None]:
    """The argv to run for a README command, or a reason to skip it."""
    command = command.split(";")[0].strip()
    args = shlex.split(command)
    if args[:3] == ["python", "-m", "gwsim.seed"]:
        return [], "the seed commands fit for minutes; tests/test_seed_reproduction.py runs them small"
    args = args[1:]  # drop 'gwsim'
    for i, arg in enumerate(args):
        if arg in OUTPUT_FLAGS and i + 1 < len(args):
            args[i + 1] = str(tmp / Path(args[i + 1]).name)
    sub = args[0]
    if sub in ("fit",):
        source = args[2]
        data = os.environ.get("GWSIM_DATA_DIR") or str(ROOT.parent / "shared" / "data")
        path = Path(source.replace("{data}", data)) if "{data}" in source else ROOT / source
        if not path.exists():
            return [], f"{source} is not here (third-party data, or a file the README makes by hand)"
    scenario = ROOT / args[1] if len(args) > 1 and args[1].endswith(".toml") else None
    if scenario is not None and scenario.is_file():
        data = os.environ.get("GWSIM_DATA_DIR") or str(ROOT.parent / "shared" / "data")
        for needed in re.findall(r"\{data\}/([^\"']+)", scenario.read_text()):
            if not (Path(data) / needed).exists():
                return [], f"{args[1]} reads {{data}}/{needed}, not here (third-party data; set GWSIM_DATA_DIR)"
    if sub in SIMULATING:
        args += SHORT + ["-n", "2"]
    if sub == "sweep" and "--out" not in args:
        args += ["--out", str(tmp / "sweep")]  # its default, sweep-NAME/, would land in the checkout
    if sub == "capacity":
        args += ["--tolerance", "0.25"]
    if sub == "measure":
        args += ["--duration", "3s", "--set", "run.warmup=0s"]
    if "--gateway" in args and args[args.index("--gateway") + 1:][:1] == ["litellm"]:
        from gwsim.extras import missing

        if missing("litellm"):
            return [], "needs gwsim[litellm] (LiteLLM's real proxy); tests/test_litellm_suite.py measures it in CI"
    if args[:2] == ["calibrate", "check"]:
        args += ["--duration", "20s", "-n", "2"]  # every scenario of a suite, 20 s each
    return args, None


COMMANDS = shown_commands(TEXT)


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15
    assert "gwsim run scenarios/examples/my_gateway.toml" in COMMANDS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[:60])
def test_every_readme_command_runs(command: str, tmp_path: Path) -> None:
    args, skip = _shortened(command, tmp_path)
    if skip:
        pytest.skip(skip)
    done = subprocess.run([*_gwsim(), *args], cwd=ROOT, capture_output=True, text=True, timeout=540)
    # validate exits 1 when an SLO misses, calibrate check when a figure is undecided (20 s cannot decide them)
    allowed = (0, 1) if args[0] in ("validate", "calibrate") else (0,)
    if 'echo "exit $?"' in command:  # the README shows this exit code on purpose (a bad-input example)
        shown = re.search(r"^exit (\d+)$", _shown_output(command), re.M)
        allowed = (int(shown.group(1)),)
    assert done.returncode in allowed, f"{command}\nexit {done.returncode}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr
    assert not [p.name for p in ROOT.glob("sweep-*")], "a README command wrote into the checkout"


def _shown_output(command: str) -> str:
    """The output the README pastes under '$ command'."""
    for lang, body in code_blocks(TEXT):
        lines = body.splitlines()
        if lines and lines[0] == f"$ {command}":
            return "\n".join(lines[1:]).strip()
    raise AssertionError(f"no output block for {command!r}")


@pytest.mark.parametrize("command", [
    "gwsim run scenarios/seed/heavy_load.toml",  # the main job: a newcomer compares it digit for digit
    "gwsim run scenarios/validation/mm10.toml -n 3 --set run.duration=5000s",
    "gwsim run scenarios/examples/my_gateway.toml",
    "gwsim compare scenarios/examples/my_gateway.toml --set-b fallback.attempt_timeout=8s",
    "gwsim validate scenarios/examples/my_gateway.toml --slo 'p95<4s' --slo 'success>=0.99' --stress none",
])
def test_the_readme_shows_what_these_commands_print(command: str) -> None:
    done = subprocess.run([*_gwsim(), *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == _shown_output(command)


def test_the_readme_scenario_is_the_shipped_file() -> None:
    shipped = (ROOT / "scenarios/examples/my_gateway.toml").read_text()
    shown = next(body for lang, body in code_blocks(TEXT) if lang == "toml" and 'name = "my_gateway"' in body)
    assert shown.strip() in shipped


def test_the_prose_quotes_the_numbers() -> None:
    run = _shown_output("gwsim run scenarios/examples/my_gateway.toml")
    success = float(re.search(r"^all\s+\d+\s+[\d.]+\s+([\d.]+)", run, re.M).group(1))
    assert f"{100 - success:.1f} % of requests fail with `timeout`" in TEXT
    compare = _shown_output("gwsim compare scenarios/examples/my_gateway.toml --set-b fallback.attempt_timeout=8s")
    p95 = re.search(r"^all\s+p95\s+ms\s+([\d.]+)\s+([\d.]+)", compare, re.M)
    assert f"P95 goes from {float(p95.group(1)) / 1000:.1f} s to {float(p95.group(2)) / 1000:.1f} s" in TEXT


@pytest.mark.timeout(600)
def test_the_readme_library_example_runs(tmp_path: Path) -> None:
    """The README's Python example, shortened (20 s of traffic) and drawing into a temporary
    directory, runs in a fresh interpreter and writes its chart."""
    code = next(body for lang, body in code_blocks(TEXT) if lang == "python" and "from gwsim.whatif" in body)
    assert '("run.duration=120s",)' in code and ', "sweep")' in code
    code = code.replace('("run.duration=120s",)', '("run.duration=20s", "run.warmup=0s")')
    code = code.replace(', "sweep")', f", {str(tmp_path / 'sweep')!r})")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sweep.html").is_file() and (tmp_path / "sweep.png").is_file()
