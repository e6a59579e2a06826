"""Options from the environment: every option of every command reads GWSIM_<COMMAND>_<OPTION>
(named after its flag, shown in --help), the command line wins, and --redis-url reads REDIS_URL."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from gwsim.cli import cli

MD1 = str(Path(__file__).resolve().parents[1] / "scenarios" / "validation" / "md1.toml")


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args, prog_name="gwsim")
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _commands(group: click.Group, path: str = "GWSIM"):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        here = f"{path}_{name.upper().replace('-', '_')}"
        yield here, command
        if isinstance(command, click.Group):
            yield from _commands(command, here)


def test_every_option_has_an_environment_variable_named_after_its_flag_and_shown_in_help() -> None:
    seen: dict[str, str] = {}
    for path, command in _commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            flag = max((o for o in param.opts if o.startswith("--")), key=len)
            expected = "REDIS_URL" if flag == "--redis-url" else f"{path}_{flag[2:].upper().replace('-', '_')}"
            assert param.envvar == expected and (param.show_envvar or f"[env var: {expected}]" in param.help), (path, flag)
            if expected != "REDIS_URL":
                assert expected not in seen, (expected, seen.get(expected))
                seen[expected] = flag
    assert {"GWSIM_RUN_SET", "GWSIM_SWEEP_PARAM", "GWSIM_CALIBRATE_PROFILE_OUT", "GWSIM_FIT_LATENCY_WHERE"} <= set(seen)


def test_run_reads_its_options_from_the_environment_and_the_command_line_wins(monkeypatch, capsys) -> None:
    monkeypatch.setenv("GWSIM_RUN_SET", "run.duration=300s run.warmup=10s")
    monkeypatch.setenv("GWSIM_RUN_SEED", "5")
    monkeypatch.setenv("GWSIM_RUN_REPLICATIONS", "1")
    monkeypatch.setenv("GWSIM_RUN_JSON", "1")
    code, out, err = _cli(["run", MD1], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["seed"], summary["replications"], summary["end_s"]) == (5, 1, 300.0)
    code, out, _ = _cli(["run", MD1, "--seed", "6"], capsys)
    assert code == 0 and json.loads(out)["seed"] == 6
    code, out, err = _cli(["run", MD1, "--help"], capsys)
    assert "GWSIM_RUN_SET" in out.replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize("args", [["measure", MD1, "--duration", "1s"], ["calibrate", "profile", "--out", "never/p.toml", "-n", "10"]],
                         ids=["measure", "calibrate-profile"])
def test_redis_url_comes_from_the_environment(args, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    code, out, err = _cli(args, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("gwsim: error: Redis at redis://127.0.0.1:1/0 is not answering") and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
