"""``gwsim measure``: the scenario run for real (real_engine), reported like ``gwsim run``."""

from __future__ import annotations

import json

import click

from real_engine.settings import DEFAULT_REDIS_URL, REDIS_URL_ENV
from simulator.units import UnitError, parse_duration


def _duration(ctx, param, value):  # noqa: ANN001 - click callback
    if value is None:
        return None
    try:
        # a bare number is seconds, as load testers write it (--duration 30)
        seconds = float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"expected a positive duration, got {value!r}")
    return seconds


def accounting_line(accounting: dict) -> str:
    failures = accounting.get("failures", {}) or {}
    parts = " + ".join(f"{n} {reason}" for reason, n in sorted(failures.items()) if n)
    sent = accounting.get("sent", 0)
    ok = accounting.get("ok", 0)
    balanced = sent == ok + sum(failures.values())
    verdict = "balanced" if balanced else "NOT BALANCED"
    return f"accounting: sent {sent} = ok {ok}" + (f" + {parts}" if parts else "") + f"  ({verdict})"


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--duration", callback=_duration, default=None, help="How long to send load, e.g. 30s [default: the scenario's run.duration].")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a scenario field (repeatable).")
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed [default: the scenario's run.seed].")
    @click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object (the summary) on stdout.")
    @click.option("--out", type=click.Path(), default=None, help="Directory for records.parquet and summary.json.")
    @click.option("--target", "target_url", default=None, metavar="URL", help="Measure an external OpenAI-compatible gateway at URL instead of the built-in one.")
    @click.option("--redis-url", envvar=REDIS_URL_ENV, show_envvar=True, default=DEFAULT_REDIS_URL, show_default=True, help="Redis the built-in gateway uses.")
    @click.option("--strict", is_flag=True, help="Refuse (exit 2) a scenario that sets a field the real engine ignores, instead of warning.")
    @click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
                  help="Header the load generator sends with every request, e.g. 'Authorization: Bearer sk-...' for a "
                  "gateway that requires a key (repeatable); $GWSIM_API_KEY sends 'Authorization: Bearer $GWSIM_API_KEY'.")
    @click.option("--gateway", type=click.Choice(["builtin", "litellm"]), default="builtin", show_default=True,
                  help="The gateway measured: gwsim's own asyncio gateway, or LiteLLM's real proxy configured by "
                  "`gwsim export litellm` (the scenario needs a [router]; install gwsim[litellm]).")
    def measure(scenario, duration, overrides, seed, as_json, out, target_url, redis_url, strict, headers, gateway) -> None:
        """Run the scenario for real: emulated upstreams, the asyncio gateway, a load generator.

        Starts the emulators and the gateway (each in its own process) on 127.0.0.1, drives them
        with the scenario's traffic, shuts everything down and prints the same table and JSON as
        `gwsim run` (engine "real"), then the accounting: requests sent = ok + failures by reason.
        """
        from gwsim.cli import check_executor, check_out_dir, emit, say_written, write_outputs
        from gwsim.extras import require

        require("real", "gwsim measure")
        from real_engine.measure import measure as run_measure
        from simulator import stats
        from simulator.scenario import load_scenario

        from real_engine.loadgen import request_headers

        sc = load_scenario(scenario, list(overrides))
        launcher = None
        if gateway == "litellm":
            launcher = _litellm_launcher(scenario, overrides, target_url, strict)
        else:
            check_executor(scenario, overrides, "real", strict)
        try:
            request_headers(headers, {})
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("--header "), param_hint="--header") from None
        check_out_dir(out)
        total = duration if duration is not None else sc.run.duration
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        bar = None
        tick = None
        if console.is_terminal:
            bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[live]}"), TimeElapsedColumn(), console=console, transient=True)
            task = bar.add_task(f"measuring {sc.run.name}", total=total, live="")

            def tick(p: dict) -> None:
                t = float(p.get("t", 0.0) or 0.0)
                rps = p.get("done", 0) / t if t > 0 else 0.0
                p95 = p.get("p95_ms")
                live = f"{rps:6.1f} req/s  p95 {p95:,.0f} ms" if p95 is not None else f"{rps:6.1f} req/s"
                bar.update(task, completed=min(t, total), live=live)

        if bar is not None:
            with bar:
                result = run_measure(scenario, list(overrides), duration_s=duration, target_url=target_url, seed=seed, progress=tick,
                                     redis_url=redis_url, headers=headers, gateway=launcher)
        else:
            result = run_measure(scenario, list(overrides), duration_s=duration, target_url=target_url, seed=seed, redis_url=redis_url,
                                 headers=headers, gateway=launcher)
        records = result.frame()
        warmup = min(sc.run.warmup, result.duration_s / 2)
        summary = stats.summarize(
            records,
            scenario=sc.run.name,
            engine="litellm" if launcher is not None else "real",
            replications=1,
            seed=result.seed,
            warmup_s=warmup,
            end_s=result.duration_s,
            endpoints=list(sc.endpoints),
        )
        summary["accounting"] = result.accounting
        from gwsim.output import provenance

        meta = provenance(sc, result.seed)
        summary.update(meta)
        files = write_outputs(out, records, summary, meta=meta)
        emit(summary, as_json, stats.format_table(summary) + "\n" + accounting_line(result.accounting))
        say_written(files, as_json)
        if as_json:
            click.echo(accounting_line(result.accounting), err=True)
        if result.interrupted:
            from simulator.errors import Interrupted

            sent = result.accounting.get("sent", 0)
            where = f" in {out}" if out else " (summary above)"
            raise Interrupted(f"interrupted; kept the {sent} requests sent so far, each counted once{where}")


def _litellm_launcher(scenario: str, overrides, target_url, strict: bool):
    """LiteLLM's proxy as the measured gateway; the export's warnings (``--strict``: the first
    refuses), a one-line error naming the extra when LiteLLM is not installed."""
    from gwsim.litellm.proxy import check_installed, launcher_for
    from gwsim.litellm_cmd import export_litellm
    from simulator.errors import ScenarioError, UsageError

    if target_url is not None:
        raise UsageError("--target and --gateway litellm: expected one gateway to measure, got both")
    check_installed()
    _, warnings = export_litellm(scenario, overrides)
    if strict and warnings:
        raise ScenarioError(warnings[0])
    for line in warnings:
        click.echo(f"gwsim: warning: {' '.join(line.split())}", err=True)
    return launcher_for(scenario, list(overrides) + ['profile="none"'])
