"""The what-if commands: ``gwsim sweep``, ``validate``, ``capacity``, ``fit latency`` and
``sensitivity`` -- the questions a capacity planner brings to the simulator ("which timeout
holds P95 under 2 s in a brownout?", "may this config go out?", "how much traffic can we
take?", "what distribution is this latency?", "which knob matters?").

``register(cli)`` adds them to the ``gwsim`` click group.  Library code lives in
``gwsim.whatif``; this module only parses options, shows progress and writes files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from simulator.errors import Interrupted, UsageError

_SET_HELP = "Override a scenario field for every run: key.path=value (repeatable)."
_DASK_HELP = "Run on Dask: 'local' starts a LocalCluster (of --workers processes), or a scheduler address such as tcp://host:8786."


def _executor(workers: int | None, dask: str | None):
    from gwsim.whatif.runner import make_executor

    return make_executor(workers, dask)


def _progress(total: int, label: str):
    from gwsim.cli import progress_bar

    return progress_bar(total, label, enabled=True)


class _Bar:
    """A progress bar whose total is learnt at the first tick (the runner knows it)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None
        self.tick = None

    def __call__(self, done: int, total: int) -> None:
        if self.tick is None:
            self.bar, self.tick = _progress(total, self.label)
            if self.bar is not None:
                self.bar.start()
        self.tick(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _needs(what: str, charts: bool = False, dask: str | None = None) -> None:
    """Refuse, before any work, a command whose optional packages are not installed."""
    from gwsim.extras import require

    if charts:
        require("charts", what)
    if dask:
        require("dask", f"{what} --dask")


def _out_dir(out: str) -> Path:
    """``--out`` checked, not yet made: bad input found later leaves no empty directory."""
    from gwsim.output import check_dir

    return check_dir(out)


def _make_dir(directory: Path) -> Path:
    from gwsim.output import ensure_dir

    return ensure_dir(directory)


def _keep_interrupted_sweep(result, directory: Path, meta: dict | None = None) -> None:  # noqa: ANN001 - a SweepResult
    """Write what an interrupted sweep finished, then stop with exit code 130.

    replications.parquet gets every finished (point, replication); points.parquet only the
    points whose replications all finished (a mean over fewer would not be comparable).
    """
    from gwsim.output import atomic_write_parquet

    kept = []
    if not (result.per_replication.empty and result.points.empty):
        _make_dir(directory)
    if not result.per_replication.empty:
        atomic_write_parquet(directory / "replications.parquet", result.per_replication, meta)
        kept.append(f"{len(result.per_replication)} replications")
    if not result.points.empty:
        atomic_write_parquet(directory / "points.parquet", result.points, meta)
        kept.append(f"{len(result.points)} of {result.points_total} points")
    what = f"kept {' and '.join(kept)} in {directory}" if kept else "nothing had finished"
    raise Interrupted(f"interrupted; {what}")


def _fmt_choice(fmt: str) -> tuple[str, ...]:
    return ("html", fmt)


def _dump(obj: dict) -> str:
    return json.dumps(obj, allow_nan=False)


def _clean(obj):  # noqa: ANN001, ANN202 - JSON-safe copy (NaN/inf -> None)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):
        return _clean(obj.item())
    return obj


def register(cli: click.Group) -> None:  # noqa: C901 - one place for all five commands
    # ------------------------------------------------------------------ sweep

    @cli.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--param", "params", multiple=True, required=True, metavar="KEY=V1,V2,...",
                  help="A parameter and its values (repeatable; the full grid is run), e.g. --param fallback.attempt_timeout=1s,2s,5s.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("-n", "--replications", type=click.IntRange(min=2), default=None, help="Replications per point [default: the scenario's].")
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed shared by every point (common random numbers).")
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [default: one per core].")
    @click.option("--dask", default=None, metavar="local|ADDRESS", help=_DASK_HELP)
    @click.option("--metric", default="p95", show_default=True, help="Metric charted: p50, p95, p99, mean, success, throughput, wait, or a column name.")
    @click.option("--slo", "slo_line", default=None, metavar="SLO", help="Draw this SLO's threshold on the chart, e.g. 'p95<2s'.")
    @click.option("--goodput", default=None, metavar="TARGETS",
                  help="Per-request targets a 'goodput' SLO counts, e.g. 'ttft<1s,tpot<50ms' (ttft, tpot, itl, latency; < or <=): goodput is the share of requests that succeed and meet every one.")
    @click.option("--out", type=click.Path(), default=None, help="Output directory [default: sweep-<scenario name>].")
    @click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True, help="Chart image format (an HTML page is always written).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object (points with intervals, file paths).")
    def sweep(scenario, params, overrides, replications, seed, workers, dask, metric, slo_line, goodput, out, fmt, as_json):  # noqa: ANN001, ANN202
        """Run the full grid of parameter values, each point with 95 % confidence intervals.

        Every point uses the same seed, so points differ only by their settings (common random
        numbers). Writes points.parquet (one row per point: each metric, _lo and _hi),
        replications.parquet (one row per point and replication), and a chart of --metric
        against the parameters as sweep.html and sweep.png (or .svg).
        """
        _needs("gwsim sweep (it draws its chart)", charts=True, dask=dask)
        from gwsim.whatif.charts import save_chart, sweep_chart
        from gwsim.whatif.runner import ScenarioSource
        from gwsim.whatif.sensitivity import metric_column
        from gwsim.whatif.slo import check_goodput, parse_goodput, parse_slo
        from gwsim.whatif.sweep import format_points, parse_param, run_sweep

        parsed = [parse_param(p) for p in params]
        source = ScenarioSource(scenario, tuple(overrides))
        base = source.build()
        column = metric_column(metric)
        threshold = None
        targets = parse_goodput(goodput)
        if slo_line:
            slo = parse_slo(slo_line, list(base.endpoints))
            targets = check_goodput([slo], goodput)
            threshold = slo.threshold
            column = slo.column if metric == "p95" and slo.column != column else column
        if column.rpartition(":")[2] == "goodput" and not targets:
            raise UsageError(f"--metric {metric}: expected --goodput with the per-request targets, e.g. --goodput 'ttft<1s,tpot<50ms'")
        directory = _out_dir(out or f"sweep-{base.run.name}")
        bar = _Bar(f"sweep {base.run.name}")
        from gwsim.output import atomic_write_parquet, provenance
        from simulator.errors import PartialResults

        try:
            with _executor(workers, dask) as ex:
                result = run_sweep(source, parsed, ex, replications=replications, seed=seed, progress=bar, goodput=targets)
        except PartialResults as stop:
            bar.close()
            _keep_interrupted_sweep(stop.finished, directory, provenance(base, stop.finished.seed))
        finally:
            bar.close()
        if column not in result.points.columns:
            raise UsageError(f"--metric {metric}: expected p50, p95, p99, mean, success, throughput, wait or a result column")

        _make_dir(directory)
        meta = provenance(base, result.seed)
        atomic_write_parquet(directory / "points.parquet", result.points, meta)
        atomic_write_parquet(directory / "replications.parquet", result.per_replication, meta)
        companion = "success_rate" if column != "success_rate" else "p95_ms"
        from gwsim.whatif.charts import conditions

        swept_load = next((p for p in result.params if p.startswith("workload.")), None)
        chart = sweep_chart(result.points, column, result.params, threshold=threshold, companion=companion,
                            replications=result.replications,
                            subtitle=[f"Scenario {base.run.name}: {base.run.description}" if base.run.description
                                      else f"Scenario {base.run.name}",
                                      conditions(base, f"swept ({swept_load})" if swept_load else None)])
        files = [str(p) for p in save_chart(chart, directory / "sweep", _fmt_choice(fmt))]
        files = [str(directory / "points.parquet"), str(directory / "replications.parquet"), *files]
        if as_json:
            click.echo(_dump(_clean({"params": list(result.params), "replications": result.replications, "seed": result.seed,
                                     "points": result.points.to_dict(orient="records"), "files": files})))
            return
        shown = [column] + [m for m in ("success_rate", "throughput_rps") if m != column]
        click.echo(f"{len(result.points)} points x {result.replications} replications, seed {result.seed}; "
                   f"mean over replications [95% CI]")
        click.echo(format_points(result, shown))
        click.echo("")
        for f in files:
            click.echo(f"wrote {f}")

    # ------------------------------------------------------------------ validate

    @cli.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--slo", "slos", multiple=True, required=True, metavar="SLO",
                  help="An objective, [endpoint:]metric OP value (repeatable), e.g. 'p95<2s', 'success>=0.995', 'chat_completions:p99<=5s'.")
    @click.option("--goodput", default=None, metavar="TARGETS",
                  help="Per-request targets a 'goodput' SLO counts, e.g. 'ttft<1s,tpot<50ms' (ttft, tpot, itl, latency; < or <=): goodput is the share of requests that succeed and meet every one.")
    @click.option("--stress", default="default", show_default=True, metavar="SUITE",
                  help="Stress suite: 'default' (shipped), 'none' (the scenario only), a directory of stress TOML files, or files (comma-separated).")
    @click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a Markdown report (for a pull-request comment) to this file.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("-n", "--replications", type=click.IntRange(min=2), default=None, help="Replications per scenario [default: the scenario's].")
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed [default: the scenario's].")
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [default: one per core].")
    @click.option("--dask", default=None, metavar="local|ADDRESS", help=_DASK_HELP)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every verdict.")
    @click.option("--out", type=click.Path(), default=None,
                  help="Directory for summary.json (every verdict), verdicts.parquet (one row per stress scenario and SLO) and replications.parquet.")
    def validate(scenario, slos, goodput, stress, report, overrides, replications, seed, workers, dask, as_json, out):  # noqa: ANN001, ANN202
        """The rollout gate: do the SLOs hold on the scenario and under stress?

        Runs the proposed configuration on its scenario and on each stress scenario (default
        suite: normal load, 2x load, provider brownout, provider outage, AI-service outage, Redis
        stall) and prints, per scenario and SLO, the value, the margin to the threshold with its
        95 % CI, and pass or FAIL. Exit status: 0 when every SLO holds everywhere, 1 when any
        fails, 2 on bad input.
        """
        _needs("gwsim validate", dask=dask)
        from gwsim.whatif.gate import format_markdown, format_text, load_suite, run_gate
        from gwsim.whatif.runner import ScenarioSource
        from gwsim.whatif.slo import check_goodput, parse_slos

        source = ScenarioSource(scenario, tuple(overrides))
        base = source.build()
        check_goodput(parse_slos(slos, list(base.endpoints)), goodput)  # bad SLOs fail before any simulation
        stresses = load_suite(stress)
        if report is not None:
            parent = Path(report).resolve().parent
            if not parent.is_dir():
                raise UsageError(f"--report {report}: expected an existing directory for the report, found none")
        directory = _out_dir(out) if out else None
        bar = _Bar(f"validate {base.run.name}")
        try:
            with _executor(workers, dask) as ex:
                result = run_gate(source, slos, stresses, ex, replications=replications, seed=seed, progress=bar, goodput=goodput)
        finally:
            bar.close()
        if report is not None:
            from gwsim.output import atomic_write_text

            atomic_write_text(report, format_markdown(result))
        files = [report] if report is not None else []
        if directory is not None:
            from gwsim.output import atomic_write_json, atomic_write_parquet, provenance, rows_frame

            _make_dir(directory)
            meta = provenance(base, result.seed)
            verdicts = rows_frame([{"stress": name, **v.as_dict()} for name, vs in result.verdicts.items() for v in vs])
            atomic_write_parquet(directory / "verdicts.parquet", verdicts, meta)
            atomic_write_parquet(directory / "replications.parquet", result.per_replication, meta)
            atomic_write_json(directory / "summary.json", _clean({**result.as_dict(), **meta}))
            files += [str(directory / n) for n in ("verdicts.parquet", "replications.parquet", "summary.json")]
        if as_json:
            payload = result.as_dict()
            payload["files"] = files
            click.echo(_dump(_clean(payload)))
        else:
            click.echo(format_text(result))
            for f in files:
                click.echo(f"wrote {f}")
        return result.exit_code

    # ------------------------------------------------------------------ capacity

    @cli.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--slo", "slos", multiple=True, required=True, metavar="SLO", help="An objective the load must meet (repeatable), e.g. 'p95<2s'.")
    @click.option("--goodput", default=None, metavar="TARGETS",
                  help="Per-request targets a 'goodput' SLO counts, e.g. 'ttft<1s,tpot<50ms' (ttft, tpot, itl, latency; < or <=): goodput is the share of requests that succeed and meet every one.")
    @click.option("--lo", type=float, default=None, help="A load expected to meet the SLOs (req/s, or users) [default: found from the scenario's].")
    @click.option("--hi", type=float, default=None, help="A load expected to miss them [default: found by doubling].")
    @click.option("--tolerance", type=float, default=0.02, show_default=True, help="Stop when the bracket is narrower than this share of the load.")
    @click.option("-n", "--replications", type=click.IntRange(min=2), default=4, show_default=True, help="Replications a probe starts with.")
    @click.option("--max-replications", type=click.IntRange(min=2), default=16, show_default=True, help="Replications a probe may grow to (doubling) until its intervals separate from the SLO.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed shared by every probe.")
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [default: one per core].")
    @click.option("--dask", default=None, metavar="local|ADDRESS", help=_DASK_HELP)
    @click.option("--out", type=click.Path(), default=None, help="Directory for probes.parquet, utilisation.parquet and the charts.")
    @click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True, help="Chart image format.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def capacity(scenario, slos, goodput, lo, hi, tolerance, replications, max_replications, overrides, seed, workers, dask, out, fmt, as_json):  # noqa: ANN001, ANN202
        """The highest arrival rate (or user count) that still meets the SLOs.

        A bisection on the load whose probes add replications until their SLO intervals
        separate from the thresholds; it stops when the bracket is within --tolerance or a
        probe sits on the threshold within noise. Prints the answer, every probe, and each
        resource's utilisation at the answer, the first to saturate on top.
        """
        _needs("gwsim capacity --out (it draws charts)" if out else "gwsim capacity", charts=bool(out), dask=dask)
        from gwsim.whatif.capacity import capacity_search, format_capacity
        from gwsim.whatif.runner import ScenarioSource
        from gwsim.whatif.slo import check_goodput, parse_slos

        source = ScenarioSource(scenario, tuple(overrides))
        base = source.build()
        check_goodput(parse_slos(slos, list(base.endpoints)), goodput)
        directory = _out_dir(out) if out else None

        def on_probe(p) -> None:  # noqa: ANN001
            if not as_json:
                click.echo(f"  probe {p.load:.4g}: {'meets' if p.feasible else 'misses'}"
                           f"{'' if p.decided else ' (within noise)'} with {p.replications} replications", err=True)

        with _executor(workers, dask) as ex:
            result = capacity_search(source, slos, ex, lo=lo, hi=hi, rel_tol=tolerance, replications=replications,
                                     max_replications=max_replications, seed=seed, on_probe=on_probe, goodput=goodput)
        files = []
        if directory is not None:
            from gwsim.output import atomic_write_parquet, provenance
            from gwsim.whatif.charts import capacity_chart, save_chart, utilisation_chart

            probes = result.probes_frame()
            _make_dir(directory)
            meta = provenance(base, seed if seed is not None else base.run.seed)
            atomic_write_parquet(directory / "probes.parquet", probes, meta)
            atomic_write_parquet(directory / "utilisation.parquet", result.utilisation, meta)
            files += [str(directory / "probes.parquet"), str(directory / "utilisation.parquet")]
            from gwsim.whatif.charts import conditions

            # every SLO's metric, one panel each: the one that decided a probe is on the chart
            cols = [(slo.column if slo.column in probes.columns else slo.column.split(":")[-1], slo.threshold) for slo in result.slos]
            unit = "req/s" if result.variable == "rate" else "users"
            files += [str(p) for p in save_chart(capacity_chart(probes, cols[0][0], cols[0][1], result.variable, answer=result.answer,
                                                                title=f"Capacity search: {', '.join(s.text for s in result.slos)}",
                                                                subtitle=conditions(base, f"each probe's {'arrival rate' if result.variable == 'rate' else 'user count'}"),
                                                                more=cols[1:]),
                                                 directory / "capacity", _fmt_choice(fmt))]
            if not result.utilisation.empty and result.answer is not None:
                files += [str(p) for p in save_chart(utilisation_chart(result.utilisation,
                                                                       title=f"Utilisation at {result.answer:.4g} {unit}",
                                                                       subtitle=conditions(base, f"{result.answer:.4g} {unit} (the capacity found)")),
                                                     directory / "utilisation", _fmt_choice(fmt))]
        if as_json:
            payload = result.as_dict()
            payload["files"] = files
            click.echo(_dump(_clean(payload)))
            return
        click.echo(format_capacity(result))
        for f in files:
            click.echo(f"wrote {f}")

    # ------------------------------------------------------------------ fit

    @cli.group()
    def fit() -> None:
        """Fit distributions to measured data for a scenario file."""

    @fit.command("latency")
    @click.argument("file", type=click.Path())
    @click.option("--column", default=None, help="Column of latencies (CSV, Parquet) or histogram name (Prometheus) [default: a latency column].")
    @click.option("--unit", type=click.Choice(["s", "ms", "us"]), default=None, help="Unit of the values [default: from the column name: *_ms is ms, else s].")
    @click.option("--where", multiple=True, metavar="COLUMN=VALUE", help="Keep only rows where COLUMN equals VALUE (repeatable), e.g. endpoint=chat_completions.")
    @click.option("--all-outcomes", is_flag=True, help="Include failed requests (default: only successes when the file says).")
    @click.option("--out", type=click.Path(), default=None, help="Directory for fit.json and a CDF chart (fit.html, fit.png).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def fit_latency_cmd(file, column, unit, where, all_outcomes, out, as_json):  # noqa: ANN001, ANN202
        """Fit lognormal, gamma, Weibull and exponential to latencies; rank by AIC and KS.

        FILE is a CSV with a header, a Parquet file (e.g. gwsim records), one number per line,
        or Prometheus text exposition with histogram buckets (name_bucket{le="..."} count).
        Prints the ranking, the empirical distribution beside it, and the scenario snippet of
        the best fit the scenario schema can express.
        """
        _needs("gwsim fit latency --out (it draws a chart)", charts=bool(out))
        from gwsim.whatif.fit import cdf_frame, fit_latency, fits_payload, format_fits, read_samples

        samples = read_samples(file, column=column, unit=unit, where=where, all_outcomes=all_outcomes)
        fits = fit_latency(samples)
        payload = fits_payload(samples, fits)
        files = []
        if out:
            import altair as alt

            from gwsim.labels import label
            from gwsim.output import atomic_write_json, provenance
            from gwsim.whatif.charts import save_chart

            directory = _make_dir(_out_dir(out))
            atomic_write_json(directory / "fit.json", _clean({**payload, **provenance()}))
            frame = cdf_frame(samples, fits)
            chart = alt.Chart(frame).mark_line().encode(
                x=alt.X("latency_ms:Q", scale=alt.Scale(type="log"), title=label("latency_ms")),
                y=alt.Y("cdf:Q", title=label("cdf")),
                color=alt.Color("source:N", title="Distribution"),
                strokeDash=alt.condition(alt.datum.source == "data", alt.value([1, 0]), alt.value([5, 3])),
                size=alt.condition(alt.datum.source == "data", alt.value(3), alt.value(1.5)),
            ).properties(width=480, height=300, title=alt.TitleParams(
                f"Fitted CDFs: {Path(file).name} {samples.column}", anchor="start",
                subtitle=[f"{samples.n} {'bucket counts' if samples.binned else 'latencies'}"
                          + (f"; {'; '.join(samples.notes)}" if samples.notes else "")
                          + ". Thick line: the data; dashed: each fitted distribution (legend)."]))
            files = [str(directory / "fit.json")] + [str(p) for p in save_chart(chart, directory / "fit")]
        if as_json:
            payload["files"] = files
            click.echo(_dump(_clean(payload)))
            return
        click.echo(format_fits(samples, fits))
        for f in files:
            click.echo(f"wrote {f}")

    # ------------------------------------------------------------------ sensitivity

    @cli.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--param", "params", multiple=True, metavar="KEY",
                  help="A parameter to vary (repeatable): a number, duration, rate or distribution path [default: every such parameter].")
    @click.option("--delta", type=float, default=20.0, show_default=True, help="Variation in percent: each parameter at -delta % and +delta %.")
    @click.option("--metric", default="p95", show_default=True, help="Metric: p50, p95, p99, mean, success, throughput, wait, [endpoint:]metric.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("-n", "--replications", type=click.IntRange(min=2), default=None, help="Replications per variant [default: the scenario's].")
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed shared by every variant.")
    @click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [default: one per core].")
    @click.option("--dask", default=None, metavar="local|ADDRESS", help=_DASK_HELP)
    @click.option("--out", type=click.Path(), default=None, help="Directory for sensitivity.parquet and the tornado chart.")
    @click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True, help="Chart image format.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def sensitivity(scenario, params, delta, metric, overrides, replications, seed, workers, dask, out, fmt, as_json):  # noqa: ANN001, ANN202
        """One-at-a-time sensitivity: each parameter -/+ delta %, ranked by the metric's swing.

        Changes are measured against the baseline with common random numbers (paired 95 % CI);
        with --out a tornado chart (tornado.html, tornado.png) is written.
        """
        from gwsim.whatif.runner import ScenarioSource
        _needs("gwsim sensitivity --out (it draws a chart)" if out else "gwsim sensitivity", charts=bool(out), dask=dask)
        from gwsim.whatif.sensitivity import format_sensitivity, run_sensitivity

        source = ScenarioSource(scenario, tuple(overrides))
        base = source.build()
        directory = _out_dir(out) if out else None
        bar = _Bar(f"sensitivity {base.run.name}")
        try:
            with _executor(workers, dask) as ex:
                result = run_sensitivity(source, params, ex, metric=metric, delta_pct=delta, replications=replications,
                                         seed=seed, progress=bar)
        finally:
            bar.close()
        files = []
        if directory is not None:
            from gwsim.output import atomic_write_parquet, provenance
            from gwsim.whatif.charts import save_chart, tornado_chart

            _make_dir(directory)
            atomic_write_parquet(directory / "sensitivity.parquet", result.table,
                                 provenance(base, seed if seed is not None else base.run.seed))
            files = [str(directory / "sensitivity.parquet")]
            from gwsim.whatif.charts import conditions

            tornado = tornado_chart(result.table, result.metric, baseline=result.baseline,
                                    replications=int(result.per_replication["replication"].nunique()),
                                    subtitle=[f"Scenario {base.run.name}; each parameter -/+{result.delta_pct:g} % on its own, "
                                              f"the others as they are", conditions(base)])
            files += [str(p) for p in save_chart(tornado, directory / "tornado", _fmt_choice(fmt))]
        if as_json:
            click.echo(_dump(_clean({"metric": result.metric, "delta_pct": result.delta_pct, "baseline": result.baseline,
                                     "baseline_ci95": list(result.baseline_ci) if result.baseline_ci else None,
                                     "parameters": result.table.to_dict(orient="records"), "skipped": list(result.skipped),
                                     "files": files})))
            return
        click.echo(format_sensitivity(result))
        for f in files:
            click.echo(f"wrote {f}")
