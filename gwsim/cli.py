"""The ``gwsim`` command line: run, compare, schema, measure, and the what-if tools.

Every command answers bad input with one line (``gwsim: error: ...``) and exit code 2,
an interrupt with exit code 130 after keeping what finished, and prints machine-readable
JSON with ``--json`` (exactly one object on stdout).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from simulator.errors import GwsimError, Interrupted, PartialResults, UsageError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _err(message: str) -> None:
    line = " ".join(str(message).split())
    click.echo(f"gwsim: error: {line}", err=True)


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past click (which would print an extra blank line)."""


class _Group(click.Group):
    """Turns every failure a user can cause into one line and an exit code.

    The commands that live in their own modules are imported the first time a command this
    module does not define is asked for (or the list of commands, for ``--help``): they pull
    in pandas' plotting and SciPy, which ``gwsim run`` does not need and would pay for at
    every start."""

    _optional_loaded = False

    def get_command(self, ctx: click.Context, cmd_name: str):  # noqa: ANN201
        if cmd_name not in self.commands and not _Group._optional_loaded:
            _register_optional()
        return _show_envvars(super().get_command(ctx, cmd_name), f"{ENVVAR_PREFIX}_{cmd_name}")

    def list_commands(self, ctx: click.Context) -> list[str]:
        if not _Group._optional_loaded:
            _register_optional()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            # the whole command path: `gwsim calibrate profile --help`, not `gwsim profile --help`
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else " (see `gwsim --help`)"
            _err(exc.format_message() + hint)
            sys.exit(EXIT_BAD_INPUT)
        except click.ClickException as exc:
            _err(exc.format_message())
            sys.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Abort, _Interrupted, KeyboardInterrupt):
            _err("interrupted; nothing was written")
            sys.exit(EXIT_INTERRUPTED)
        except GwsimError as exc:
            _err(str(exc))
            sys.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            # an optional package a command reached for without checking first (gwsim.extras)
            from gwsim.extras import EXTRAS, extra_of, hint

            extra = extra_of(exc.name)
            if extra is None:
                raise
            _err(f"expected the '{extra}' extra ({EXTRAS[extra][1]}), found {exc.name} not installed; install it with {hint(extra)}")
            sys.exit(EXIT_BAD_INPUT)
        except BrokenPipeError:
            # the reader went away (``gwsim run ... | head``): stop quietly, and keep Python's
            # final flush of stdout from reporting the broken pipe
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(1)
        except MemoryError:
            _err("out of memory: a count or duration in the scenario is likely too large (e.g. workload.users, run.replications)")
            sys.exit(EXIT_BAD_INPUT)
        except (OverflowError, RecursionError) as exc:
            _err(f"{exc.__class__.__name__} ({' '.join(str(exc).split())}): a value in the scenario is likely too large")
            sys.exit(EXIT_BAD_INPUT)
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


#: Every option may come from the environment, as GWSIM_<COMMAND>_<OPTION> (click's auto_envvar_prefix).
ENVVAR_PREFIX = "GWSIM"


def _show_envvars(command, prefix: str = ENVVAR_PREFIX):  # noqa: ANN001, ANN202 - a click.Command, or None
    """Give each option of ``command`` and its subcommands the environment variable named after
    its flag (``--set`` of ``gwsim run``: GWSIM_RUN_SET, not click's GWSIM_RUN_OVERRIDES after
    the parameter) and show it in ``--help``.  An option with its own (REDIS_URL) keeps it."""
    if command is None or getattr(command, "_gwsim_envvars_shown", False):
        return command
    command._gwsim_envvars_shown = True
    stem = prefix.upper().replace("-", "_")
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("help", "version"):
            continue
        if param.envvar is None:
            flag = max((o for o in param.opts if o.startswith("--")), key=len, default=f"--{param.name}")
            param.envvar = f"{stem}_{flag[2:].upper().replace('-', '_')}"
        if not param.show_envvar:
            # in the help text rather than show_envvar, which would also put it into every error
            # line about the option's value (most often typed on the command line)
            param.help = f"{(param.help or '').rstrip()}  [env var: {param.envvar}]".lstrip()
    for name, sub in getattr(command, "commands", {}).items():
        _show_envvars(sub, f"{stem}_{name}")
    return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                           "auto_envvar_prefix": ENVVAR_PREFIX})
@click.version_option(package_name="gwsim")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
def cli(verbose: bool) -> None:
    """gwsim: what will this gateway change do to P50/P95/P99, throughput and success rate?

    A scenario file (TOML) describes the gateway, its upstreams and its traffic. `gwsim run`
    predicts with a discrete-event simulation; `gwsim measure` runs the same scenario on a real
    asyncio gateway on loopback; `gwsim compare` puts two configurations side by side.

    Every option can also be set in the environment, as GWSIM_<COMMAND>_<OPTION> (each
    command's --help names them: GWSIM_RUN_WORKERS=2, GWSIM_SWEEP_OUT=results); a flag given on
    the command line wins.  --redis-url reads REDIS_URL.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


# ----------------------------------------------------------------------------- helpers


def load(path: str, overrides: tuple[str, ...] | list[str]):
    from simulator.scenario import load_scenario

    return load_scenario(path, list(overrides))


def progress_bar(total: int, label: str, enabled: bool = True):
    """A rich progress bar on stderr; a no-op callable when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None, (lambda done, total_: None)  # without importing rich (a run's start-up pays for it)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        return None, (lambda done, total_: None)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task(label, total=total)
    return bar, (lambda done, total_: bar.update(task, completed=done))


def write_outputs(out: str | None, records, summary: dict, extra: dict[str, Any] | None = None,
                  meta: dict[str, Any] | None = None) -> list[str]:
    """Write records.parquet, the ``extra`` tables and summary.json (last: its presence says the
    rest is complete) to ``out``; the paths written.  ``meta`` (``gwsim.output.provenance``)
    goes into every Parquet file's metadata."""
    if out is None:
        return []
    from gwsim.output import atomic_write_json, atomic_write_parquet, ensure_dir

    directory = ensure_dir(out)
    written = []
    if records is not None:
        atomic_write_parquet(directory / "records.parquet", records, meta)
        written.append(directory / "records.parquet")
    for name, frame in (extra or {}).items():
        atomic_write_parquet(directory / name, frame, meta)
        written.append(directory / name)
    atomic_write_json(directory / "summary.json", summary)
    return [str(p) for p in [*written, directory / "summary.json"]]


def say_written(files: list[str], as_json: bool) -> None:
    """``wrote PATH`` per file: after the table, or on stderr when stdout holds the one JSON object."""
    for f in files:
        click.echo(f"wrote {f}", err=as_json)


def check_executor(path: str, overrides: tuple[str, ...] | list[str], executor: str, strict: bool) -> None:
    """Warn (on stderr) about each field the scenario sets that ``executor`` ignores; with
    ``strict`` refuse the first of them instead (exit 2, before anything is written)."""
    from simulator.errors import ScenarioError
    from simulator.executors import unmodelled

    found = unmodelled(path, list(overrides), executor)
    if strict and found:
        more = len(found) - 1
        raise ScenarioError(found[0].message() + (f" (and {more} more field{'s' if more > 1 else ''})" if more else ""))
    for item in found:
        click.echo(f"gwsim: warning: {' '.join(item.message().split())}", err=True)


_STRICT_HELP = "Refuse (exit 2) a scenario that sets a field this executor ignores, instead of warning."


def check_out_dir(out: str | None) -> None:
    """Refuse an unusable ``--out`` before any work: made here, once every input is checked
    (a run has nothing left to refuse after its scenario is loaded)."""
    if out is not None:
        from gwsim.output import ensure_dir

        ensure_dir(out)


def emit(summary: dict, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, allow_nan=False))
    else:
        click.echo(text)


# ----------------------------------------------------------------------------- commands

_SET_HELP = "Override a scenario field: key.path=value (TOML value; repeatable), e.g. --set gateway.cpu_workers=4."


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=True))
@click.option("-n", "--replications", type=click.IntRange(min=1), default=None, help="Independent replications [default: the scenario's run.replications].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed [default: the scenario's run.seed].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object (the summary) on stdout.")
@click.option("--out", type=click.Path(), default=None, help="Directory for records.parquet, gauges.parquet, timeseries.parquet (per run.window) and summary.json.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes for replications [default: one per core].")
@click.option("--records", "records_mode", type=click.Choice(["all", "none"]), default="all", show_default=True,
              help="none: keep only latency histograms and outcome counts (bounded memory; percentiles within 0.6 %; no records or gauges written).")
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
def run(scenario: str, replications: int | None, seed: int | None, overrides: tuple[str, ...], as_json: bool, out: str | None, workers: int | None, records_mode: str, strict: bool) -> None:
    """Predict latency percentiles, throughput and success rate with the simulator.

    Prints a table per endpoint (count, completed req/s, success %, mean/P50/P95/P99/max in ms,
    95 % confidence interval of P95 across replications).
    """
    from simulator.api import run_scenario

    sc = load(scenario, overrides)
    check_executor(scenario, overrides, "simulator", strict)
    check_out_dir(out)
    n = replications or sc.run.replications
    bar, tick = progress_bar(n, f"simulating {sc.run.name}", enabled=True)
    try:
        if bar is not None:
            with bar:
                result = run_scenario(sc, replications=replications, seed=seed, workers=workers, progress=tick, records=records_mode)
        else:
            result = run_scenario(sc, replications=replications, seed=seed, workers=workers, records=records_mode)
    except PartialResults as stop:
        # Ctrl-C: report and write the replications that finished, then exit 130
        if stop.finished is None:
            raise Interrupted(f"interrupted; none of the {stop.total} replications had finished") from None
        _report_run(stop.finished, records_mode, out, as_json)
        where = f" in {out}" if out else " (summary above)"
        raise Interrupted(f"interrupted; kept the {stop.finished.replications} of {stop.total} replications that finished{where}") from None
    _report_run(result, records_mode, out, as_json)


def _report_run(result, records_mode: str, out: str | None, as_json: bool) -> None:  # noqa: ANN001 - a SimRun
    from gwsim.output import provenance
    from simulator import stats

    meta = provenance(result.scenario, result.seed)
    summary = {**result.summary, **meta}
    if records_mode == "none":
        files = write_outputs(out, None, summary, meta=meta)
    else:
        extra = {"gauges.parquet": result.gauges, "timeseries.parquet": result.time_series()}
        files = write_outputs(out, result.records, summary, extra, meta)
    emit(summary, as_json, stats.format_table(summary))
    say_written(files, as_json)


@cli.command()
@click.argument("scenario_a", type=click.Path())
@click.argument("scenario_b", type=click.Path(), required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override applied to both A and B.")
@click.option("--set-b", "overrides_b", multiple=True, metavar="KEY=VALUE", help="Override applied to B only (B defaults to A).")
@click.option("-n", "--replications", type=click.IntRange(min=2), default=None, help="Replications of each side [default: scenario's].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed shared by both sides (common random numbers).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with both summaries and the deltas.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--out", type=click.Path(), default=None,
              help="Directory for summary.json (both summaries and the deltas), deltas.parquet, and a/ and b/ with each side's records.parquet and summary.json.")
def compare(scenario_a: str, scenario_b: str | None, overrides: tuple[str, ...], overrides_b: tuple[str, ...], replications: int | None, seed: int | None, as_json: bool, workers: int | None, out: str | None) -> None:
    """Compare two configurations side by side, with common random numbers.

    Either two files (A B), or one file and --set-b variants. For every endpoint and metric it
    prints A, B, the delta B-A with its paired 95 % CI, and whether the delta exceeds its noise.
    """
    from simulator import stats
    from simulator.api import run_scenario

    if scenario_b is None and not overrides_b:
        raise UsageError("compare needs a second scenario file or at least one --set-b override")
    sc_a = load(scenario_a, overrides)
    sc_b = load(scenario_b or scenario_a, list(overrides) + list(overrides_b))
    check_out_dir(out)
    n = replications or max(sc_a.run.replications, 2)
    s = seed if seed is not None else sc_a.run.seed
    run_a = run_scenario(sc_a, replications=n, seed=s, workers=workers)
    run_b = run_scenario(sc_b, replications=n, seed=s, workers=workers)
    rows = stats.compare_summaries(run_a.summary, run_b.summary, run_a.per_replication(), run_b.per_replication())
    from gwsim.output import provenance

    meta_a, meta_b = provenance(sc_a, s), provenance(sc_b, s)
    payload = {"a": {**run_a.summary, **meta_a}, "b": {**run_b.summary, **meta_b}, "deltas": rows,
               "gwsim_version": meta_a["gwsim_version"], "seed": s}
    files: list[str] = []
    if out is not None:
        from gwsim.output import atomic_write_parquet, rows_frame

        files += write_outputs(str(Path(out) / "a"), run_a.records, payload["a"], meta=meta_a)
        files += write_outputs(str(Path(out) / "b"), run_b.records, payload["b"], meta=meta_b)
        both = {"gwsim_version": meta_a["gwsim_version"], "seed": s, "scenario_a_sha256": meta_a["scenario_sha256"],
                "scenario_b_sha256": meta_b["scenario_sha256"]}
        atomic_write_parquet(Path(out) / "deltas.parquet", rows_frame(rows), both)
        files += [str(Path(out) / "deltas.parquet"), *write_outputs(out, None, payload)]
    if as_json:
        click.echo(json.dumps(payload, allow_nan=False))
    else:
        click.echo(f"A: {scenario_a} {' '.join(overrides)}".rstrip())
        click.echo(f"B: {scenario_b or scenario_a} {' '.join(list(overrides) + list(overrides_b))}".rstrip())
        click.echo(stats.format_compare(rows))
    say_written(files, as_json)


@cli.command()
@click.option("--out", type=click.Path(), default=None, help="Write the schema to this file instead of stdout.")
@click.option("--markdown", is_flag=True, help="The human reference (every key with its type, default and help) instead of JSON Schema.")
def schema(out: str | None, markdown: bool) -> None:
    """Print the scenario files' JSON Schema (for editors that validate TOML)."""
    from simulator.scenario import json_schema

    if markdown:
        from gwsim.reference import markdown as reference

        text = reference()
    else:
        text = json.dumps(json_schema(), indent=2)
    if out:
        from gwsim.output import atomic_write_text

        atomic_write_text(out, text + "\n")
    else:
        click.echo(text)


def _register_optional() -> None:
    """Commands that live in their own modules (measure, calibrate, sweep, ...)."""
    import importlib

    _Group._optional_loaded = True
    for module in ("gwsim.measure_cmd", "gwsim.whatif_cmd", "gwsim.workload_cmd", "gwsim.calibrate_cmd", "gwsim.seed", "gwsim.litellm_cmd"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(cli)


def main() -> None:
    cli.main(prog_name="gwsim")


_show_envvars(cli)


if __name__ == "__main__":
    main()
