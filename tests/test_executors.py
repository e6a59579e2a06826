"""Every scenario field says which executor honours it, and `gwsim run` / `gwsim measure` say
when a scenario sets one their executor ignores (``--strict``: exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from gwsim.cli import cli
from gwsim.reference import markdown
from simulator.distributions import MixtureComponent, _Dist
from simulator.executors import EXECUTORS, declaration, only, unmodelled
from simulator.machine_config import Machine
from simulator.scenario import ConnectionPool, Gateway, RequestClass, Run, Scenario, Workload, json_schema

ROOT = Path(__file__).resolve().parents[1]

# A scenario of a few simulated seconds: one endpoint, one provider, nothing else.
TINY = """
[run]
duration = "20s"
drain = "5s"
replications = {replications}
seed = 3

[workload]
arrivals = {{ process = "poisson", rate = "2/s" }}
mix = {{ {endpoint} = 1.0 }}

[endpoints.{endpoint}]
kind = "chat_completions"
model_selection = false
classes = [{{ name = "job", provider = "p" }}]

[providers.p]
latency = {{ model = "plain", time = {{ dist = "deterministic", value = "50ms" }} }}
{extra}
"""


def _scenario(tmp_path: Path, extra: str = "", replications: int = 5, endpoint: str = "chat") -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(TINY.format(extra=extra, replications=replications, endpoint=endpoint))
    return path


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args, prog_name="gwsim")
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _reason(model: type[BaseModel], name: str) -> str:
    return declaration(model.model_fields[name]).reason


# ----------------------------------------------------------------------------- the declarations


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def test_every_schema_field_has_a_valid_declaration() -> None:
    """Walks every table of the schema (distributions included): each field's declaration is
    one of both/simulator/real, a one-sided one says why, and the fields of a one-sided table
    repeat its declaration (so the reference, table by table, shows the truth).  A
    distribution is a value: its own keys declare nothing (the field holding it does)."""
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[type[BaseModel], str]] = [(Scenario, "both")]
    fields = one_sided = 0
    while queue:
        model, table = queue.pop()
        if model in seen:
            continue
        seen.add(model)
        value = issubclass(model, (_Dist, MixtureComponent))
        for name, field in model.model_fields.items():
            decl = declaration(field)  # raises on a malformed declaration
            fields += 1
            assert decl.executors in EXECUTORS
            if decl.executors != "both":
                one_sided += 1
                assert len(decl.reason.strip()) > 10, f"{model.__name__}.{name}: no reason"
            if value:
                assert field.json_schema_extra is None, f"{model.__name__}.{name}: a distribution's key declares executors"
            elif table != "both":
                assert decl.executors == table, f"{model.__name__}.{name} sits in a {table}-only table but says {decl.executors}"
            queue.extend((sub, decl.executors) for sub in _models(field.annotation))
    assert any(issubclass(m, _Dist) for m in seen)
    assert fields > 150 and one_sided >= 10
    assert {Machine, ConnectionPool, RequestClass} <= seen


def test_fields_known_to_be_one_sided_say_so() -> None:
    assert declaration(Gateway.model_fields["body_read_timeout"]).executors == "real"
    assert declaration(Gateway.model_fields["cancel_on_disconnect"]).executors == "real"
    assert declaration(ConnectionPool.model_fields["tls"]).executors == "real"
    assert declaration(Run.model_fields["replications"]).executors == "simulator"
    assert declaration(Scenario.model_fields["profile"]).executors == "simulator"
    assert all(declaration(f).executors == "simulator" for f in Machine.model_fields.values())
    assert declaration(Run.model_fields["duration"]).executors == "both"


def test_a_malformed_declaration_is_refused(monkeypatch) -> None:
    field = RequestClass.model_fields["weight"]
    monkeypatch.setattr(field, "json_schema_extra", {"executors": "simulatr"})
    with pytest.raises(ValueError, match="simulatr"):
        declaration(field)
    monkeypatch.setattr(field, "json_schema_extra", {"executors": "real"})
    with pytest.raises(ValueError, match="reason"):
        declaration(field)


def test_reference_and_json_schema_show_the_executors() -> None:
    text = markdown()
    assert "| key | type | default | executors | meaning |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `body_read_timeout` |"))
    assert f"| real engine only ({_reason(Gateway, 'body_read_timeout')}) |" in row
    row = next(line for line in text.splitlines() if line.startswith("| `duration` |"))
    assert "| both |" in row
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    # every row has the five cells (a '|' inside a cell is escaped)
    assert all(line.replace("\\|", "").count("|") == 6 for line in rows), [r for r in rows if r.replace("\\|", "").count("|") != 6][:2]
    tls = json_schema()["$defs"]["ConnectionPool"]["properties"]["tls"]
    assert tls["executors"] == "real" and tls["executors_reason"] == _reason(ConnectionPool, "tls")


# ----------------------------------------------------------------------------- what a scenario sets


def test_a_field_set_away_from_its_default_is_found_with_its_toml_path(tmp_path, monkeypatch) -> None:
    # a class-level field declared for the real engine only, to see the array path written out
    monkeypatch.setattr(RequestClass.model_fields["weight"], "json_schema_extra", only("real", "a test"))
    path = tmp_path / "s.toml"
    path.write_text(
        TINY.format(extra="", replications=5, endpoint='"chat.v1"').replace(
            'classes = [{ name = "job", provider = "p" }]',
            'classes = [{ name = "a", provider = "p" }, { name = "b", provider = "p", weight = 3 }]',
        )
    )
    found = unmodelled(path, ["gateway.body_read_timeout=5s"], "simulator")
    assert [u.path for u in found] == ['endpoints."chat.v1".classes[1].weight', "gateway.body_read_timeout"]
    assert found[0].message() == f'{path}: endpoints."chat.v1".classes[1].weight is not modelled by the simulator (a test)'
    assert unmodelled(path, [], "real") == []


def test_defaults_written_out_or_left_out_are_not_reported(tmp_path) -> None:
    explicit = _scenario(
        tmp_path,
        '[providers.p.pool]\ntls = false\n\n[gateway]\nbody_read_timeout = "30s"\ncancel_on_disconnect = false\n',
    )
    assert unmodelled(explicit, [], "simulator") == []
    assert unmodelled(explicit, ["run.replications=5"], "real") == []
    assert [u.path for u in unmodelled(explicit, ["gateway.cancel_on_disconnect=true"], "simulator")] == ["gateway.cancel_on_disconnect"]


def test_what_the_profile_fills_in_is_not_the_scenario_setting_it(tmp_path) -> None:
    (tmp_path / "profile.toml").write_text('[machine]\ncores = 2\nredis_op_time = "1ms"\ndial_time = "1ms"\n')
    path = _scenario(tmp_path)
    path.write_text('profile = "profile.toml"\n' + path.read_text())  # a top-level key, before the tables
    # profile tells the simulator how to run (declared simulator-only, warn=False): no warning either way
    assert declaration(Scenario.model_fields["profile"]).warn is False
    assert unmodelled(path, [], "real") == []
    assert unmodelled(path, [], "simulator") == []


def test_fields_that_say_how_to_run_one_executor_do_not_warn(tmp_path) -> None:
    path = _scenario(tmp_path, replications=3)
    assert declaration(Run.model_fields["replications"]).executors == "simulator"
    assert unmodelled(path, ["run.window=5s"], "real") == []


# ----------------------------------------------------------------------------- the commands


def test_run_warns_about_a_real_engine_only_field(tmp_path, capsys) -> None:
    path = _scenario(tmp_path, '[gateway]\nbody_read_timeout = "5s"\n')
    code, out, err = _cli(
        ["run", str(path), "-n", "1", "--json", "--set", "gateway.cancel_on_disconnect=true"], capsys
    )
    assert code == 0, err
    assert out.startswith("{")
    warnings = [line for line in err.splitlines() if line.startswith("gwsim: warning: ")]
    assert warnings == [
        f"gwsim: warning: {path}: gateway.body_read_timeout is not modelled by the simulator ({_reason(Gateway, 'body_read_timeout')})",
        f"gwsim: warning: {path}: gateway.cancel_on_disconnect is not modelled by the simulator ({_reason(Gateway, 'cancel_on_disconnect')})",
    ]


def test_run_strict_refuses_it_and_writes_nothing(tmp_path, capsys) -> None:
    path = _scenario(tmp_path, '[providers.p.pool]\ntls = true\n')
    out_dir = tmp_path / "results"
    code, out, err = _cli(["run", str(path), "-n", "1", "--strict", "--out", str(out_dir)], capsys)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"gwsim: error: {path}: providers.p.pool.tls is not modelled by the simulator ({_reason(ConnectionPool, 'tls')})"
    ]
    assert not out_dir.exists()


def test_run_on_defaults_does_not_warn(tmp_path, capsys) -> None:
    path = _scenario(tmp_path)
    out_dir = tmp_path / "results"
    code, out, err = _cli(["run", str(path), "-n", "1", "--strict", "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert "warning" not in err and "error" not in err
    assert (out_dir / "summary.json").exists()


def test_measure_strict_refuses_a_simulator_only_field_before_starting_anything(tmp_path, capsys) -> None:
    path = _scenario(tmp_path, replications=3)
    out_dir = tmp_path / "measured"
    code, out, err = _cli(["measure", str(path), "--strict", "--duration", "1s", "--out", str(out_dir),
                           "--set", 'workload.replay=[[0.5, "chat", "job"]]'], capsys)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"gwsim: error: {path}: workload.replay is not modelled by the real engine ({_reason(Workload, 'replay')})"
    ]
    assert not out_dir.exists()
