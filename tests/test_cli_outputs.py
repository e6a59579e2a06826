"""What the reporting commands write with ``--out``: compare and validate write like run and
sweep do (atomically, summary.json last), every command says what it wrote, and bad input
found after the ``--out`` check (a sweep point, a sensitivity key) leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gwsim.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MD1 = str(ROOT / "scenarios" / "validation" / "md1.toml")
SHORT = ["--set", "run.duration=300s", "--set", "run.warmup=10s"]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args, prog_name="gwsim")
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_compare_out_writes_both_sides_the_deltas_and_the_json_payload(tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    code, stdout, _ = _cli(["compare", MD1, *SHORT, "--set-b", "providers.server.concurrency=2", "-n", "2", "--json", "--out", str(out)], capsys)
    assert code == 0
    payload = json.loads(stdout)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "a/records.parquet", "a/summary.json", "b/records.parquet", "b/summary.json", "deltas.parquet", "summary.json"]
    written = json.loads((out / "summary.json").read_text())
    assert written["deltas"] == payload["deltas"]
    assert written["a"]["overall"] == payload["a"]["overall"] and written["b"]["overall"] == payload["b"]["overall"]
    deltas = pd.read_parquet(out / "deltas.parquet")
    assert len(deltas) == len(payload["deltas"])
    assert {"ci95_lo", "ci95_hi", "delta", "significant"} <= set(deltas.columns)
    p95 = deltas[(deltas["endpoint"] == "all") & (deltas["metric"] == "p95")].iloc[0]
    assert p95["ci95_lo"] <= p95["mean_diff"] <= p95["ci95_hi"]
    assert set(pd.read_parquet(out / "a" / "records.parquet")["replication"]) == {0, 1}


def test_validate_out_writes_one_verdict_row_per_slo_and_says_so(tmp_path, capsys) -> None:
    out = tmp_path / "gate"
    code, stdout, _ = _cli(["validate", MD1, *SHORT, "--slo", "p95<60s", "--slo", "success>=0.5", "--stress", "none", "-n", "2", "--out", str(out)], capsys)
    assert code == 0, stdout
    verdicts = pd.read_parquet(out / "verdicts.parquet")
    assert list(verdicts["slo"]) == ["p95<60s", "success>=0.5"]
    assert verdicts["passed"].all() and {"value", "ci95_lo", "ci95_hi", "margin"} <= set(verdicts.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True and summary["replications"] == 2
    assert len(pd.read_parquet(out / "replications.parquet")) == 2
    assert [line for line in stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote {out / n}" for n in ("verdicts.parquet", "replications.parquet", "summary.json")]


def test_run_out_says_what_it_wrote(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = _cli(["run", MD1, *SHORT, "-n", "1", "--out", str(out)], capsys)
    assert code == 0
    wrote = [line.removeprefix("wrote ") for line in stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(Path(w).name for w in wrote) == sorted(p.name for p in out.iterdir())
    assert wrote[-1] == str(out / "summary.json")
    # --json: stdout is the one object; the files are listed on stderr
    code, stdout, stderr = _cli(["run", MD1, *SHORT, "-n", "1", "--json", "--out", str(out)], capsys)
    assert code == 0 and json.loads(stdout)["replications"] == 1
    assert f"wrote {out / 'summary.json'}" in stderr.splitlines()


@pytest.mark.parametrize("args", [
    ["sweep", MD1, *SHORT, "--param", "nosuch.key=1,2", "-n", "2"],
    ["sweep", MD1, *SHORT, "--param", "providers.server.concurrency=1,abc", "-n", "2"],
    ["sensitivity", MD1, *SHORT, "--param", "nosuch.key", "-n", "2"],
    ["compare", MD1, *SHORT, "--set-b", "nosuch.key=1", "-n", "2"],
    ["validate", MD1, *SHORT, "--slo", "p95<", "--stress", "none", "-n", "2"],
    ["run", MD1, "--set", "run.duration=abc"],
    ["capacity", MD1, *SHORT, "--slo", "nosuch:p95<1s"],
], ids=["sweep-key", "sweep-value", "sensitivity-key", "compare-set-b", "validate-slo", "run-set", "capacity-slo"])
def test_bad_input_leaves_no_output_directory(args, tmp_path, capsys) -> None:
    out = tmp_path / "deep" / "out"
    code, stdout, stderr = _cli([*args, "--out", str(out)], capsys)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("gwsim: error: ")
    assert list(tmp_path.iterdir()) == []


def test_calibrate_profile_replaces_no_profile_unless_one_is_named(tmp_path, capsys) -> None:
    shipped = ROOT / "scenarios" / "calibration" / "profiles" / "this_machine.toml"
    before = shipped.read_bytes()
    code, stdout, stderr = _cli(["calibrate", "profile", "-n", "10"], capsys)
    assert code == 2 and stdout == ""
    assert stderr == "gwsim: error: Missing option '--out'. (see `gwsim calibrate profile --help`)\n"
    # a place it cannot write is refused before a minute of measuring
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = _cli(["calibrate", "profile", "--out", str(blocker / "p.toml")], capsys)
    assert code == 2 and stderr == f"gwsim: error: --out {blocker / 'p.toml'}: expected a file in a writable directory\n"
    assert shipped.read_bytes() == before
