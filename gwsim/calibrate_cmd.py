"""``gwsim calibrate``: machine profile, prediction-vs-measurement check, parameter fit."""

from __future__ import annotations

import json

import click

from gwsim.measure_cmd import _duration
from real_engine.settings import DEFAULT_REDIS_URL, REDIS_URL_ENV


def register(cli: click.Group) -> None:
    @cli.group()
    def calibrate() -> None:
        """Check the simulator against real measurements and fit it to them."""

    @calibrate.command()
    @click.option("--out", type=click.Path(dir_okay=False), required=True,
                  help="Profile TOML to write (two sample CSVs go next to it). Required, so the shipped profile the "
                  "calibration suite reads (scenarios/calibration/profiles/this_machine.toml) is replaced only when named.")
    @click.option("-n", "--samples", type=click.IntRange(min=10), default=200, show_default=True, help="Samples per micro-benchmark (connect, TLS, Redis).")
    @click.option("--duration", callback=_duration, default=None,
                  help="Length of each of the two real-engine runs [default: 12s; 120s with --gateway litellm (the second run half as long), whose "
                  "proxy stalls once in about 1,200 requests].")
    @click.option("--rate", type=click.FloatRange(min=1.0, max=200.0), default=None,
                  help="Requests per second in those runs [default: 20; 10 with --gateway litellm, a quarter of its knee].")
    @click.option("--redis-url", envvar=REDIS_URL_ENV, show_envvar=True, default=DEFAULT_REDIS_URL, show_default=True, help="Redis the gateway of the two runs and the Redis benchmark use.")
    @click.option("--json", "as_json", is_flag=True, help="Print the measured values (seconds; cores and background as counts) as one JSON object.")
    @click.option("--gateway", type=click.Choice(["builtin", "litellm"]), default="builtin", show_default=True,
                  help="The gateway profiled: gwsim's own, or LiteLLM's real proxy (gwsim[litellm]; its CPU per request "
                  "and per failed upstream call, with the load generator's and the emulators'; the suite under "
                  "scenarios/litellm reads scenarios/litellm/profiles/this_machine.toml).")
    def profile(out: str, samples: int, duration: float, rate: float, redis_url: str, as_json: bool, gateway: str) -> None:
        """Measure this machine: CPU per request and per upstream call of the load generator, the
        gateway's event loop and the emulators, other work on the cores, the wall time per request
        and per call beyond that (sample files), TCP connect, TLS handshake and Redis operation;
        write a profile TOML scenarios can refer to.  With --gateway litellm: the same for LiteLLM's
        proxy (two runs of --duration each, one with half of the upstream calls failing)."""
        from pathlib import Path

        from gwsim.extras import require

        require("litellm" if gateway == "litellm" else "real", "gwsim calibrate profile" + (" --gateway litellm" if gateway == "litellm" else ""))
        from gwsim.calibration.profile import measure_profile, write_profile
        from gwsim.output import check_dir
        from simulator.errors import UsageError

        # refuse an unwritable place before a minute of measuring, not after
        if Path(out).is_dir():
            raise UsageError(f"--out {out}: expected a profile TOML file path, got a directory")
        try:
            check_dir(Path(out).parent)
        except UsageError:
            raise UsageError(f"--out {out}: expected a file in a writable directory") from None
        from real_engine.measure import check_redis

        check_redis(redis_url)  # one line now, not a traceback from the Redis benchmark later
        if gateway == "litellm":
            from gwsim.litellm.profile import measure_litellm_profile

            prof = measure_litellm_profile(duration_s=duration or 120.0, rate=rate or 10.0, redis_url=redis_url)
        else:
            prof = measure_profile(n=samples, duration_s=duration or 12.0, rate=rate or 20.0, redis_url=redis_url)
        paths = write_profile(prof, out)
        values = prof.values
        if as_json:
            click.echo(json.dumps(values))
        else:
            for k, v in values.items():
                if k in ("cores", "background", "_stalls", "_calls_per_request_failing"):
                    click.echo(f"{k:26s} {v:8.3f}")
                elif k.endswith("_share"):
                    click.echo(f"{k.strip('_'):26s} {v * 100:8.1f} %")
                else:
                    click.echo(f"{k.strip('_'):26s} {v * 1000:8.3f} ms")
            for p in paths:
                click.echo(f"wrote {p}")

    @calibrate.command()
    @click.argument("suite_dir", type=click.Path())
    @click.option("--duration", callback=_duration, default=None, help="Measured (and simulated) time per scenario [default: each scenario's run.duration].")
    @click.option("-n", "--replications", type=click.IntRange(min=1), default=None, help="Simulator replications [default: the scenario's].")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field in every scenario (repeatable).")
    @click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed [default: each scenario's run.seed].")
    @click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
    @click.option("--out", type=click.Path(), default=None, help="Directory for check.json and per-scenario measured/predicted records.")
    @click.option("--background", type=click.Choice(["profile", "measured"]), default="profile", show_default=True,
                  help="Other work on the machine given to the simulator: the profile's (a prediction), or, as a "
                  "DIAGNOSTIC (not a prediction), the one sampled during each measurement.")
    @click.option("--traffic", type=click.Choice(["own", "measured"]), default="own", show_default=True,
                  help="Open-loop traffic of the simulator: its own draws (a prediction), or, as a DIAGNOSTIC (not a "
                  "prediction), the measured requests replayed.")
    @click.option("--speed", type=click.Choice(["profile", "measured"]), default="profile", show_default=True,
                  help="The machine's speed given to the simulator: the profile's (a prediction), or, as a DIAGNOSTIC "
                  "(not a prediction), the speed probe's during each measurement against the profile's (machine.speed).")
    @click.option("--gateway", type=click.Choice(["builtin", "litellm"]), default="builtin", show_default=True,
                  help="The gateway measured: gwsim's own, or LiteLLM's real proxy (scenarios with a [router]; gwsim[litellm]).")
    @click.option("--remeasure", type=click.IntRange(min=0), default=1, show_default=True,
                  help="Measure a scenario again, up to this many times, while the hypervisor took more than 5 % of the "
                  "cores in some 5 s of its compared window (column 'steal %'): such a measurement is not on a quiet "
                  "machine, and a scenario whose last one was not does not pass (NOT QUIET).  Decided by the steal alone.")
    def check(suite_dir, duration, replications, overrides, seed, as_json, out, background, traffic, speed, gateway,
              remeasure) -> int:
        """Predict every scenario of SUITE_DIR from the scenario and its machine profile alone, measure it on the
        real engine, and compare per endpoint: P50/P95/P99, throughput and success rate (and for streamed
        requests TTFT P50/P95 and TPOT P50), each with the half-width of the measured value's 95 % CI (a figure
        whose CI is not narrower than its threshold is inconclusive), and the two-sample KS statistic against its
        1 % critical value.  Exit 1 unless every figure is decided and within its threshold, no KS statistic
        exceeds its critical value and every scenario was measured on a quiet machine (no spell of the
        hypervisor taking the cores: --remeasure)."""
        from gwsim.extras import require

        require("real", "gwsim calibrate check")
        if gateway == "litellm":
            require("litellm", "gwsim calibrate check --gateway litellm")
        from gwsim.calibration.check import check_scenario, format_checks, suite_document, suite_files
        from gwsim.output import atomic_write_json, atomic_write_parquet, check_dir, ensure_dir

        files = suite_files(suite_dir)
        directory = check_dir(out) if out else None
        if (traffic, background, speed) != ("own", "profile", "profile"):
            click.echo("gwsim: diagnostic run: the simulator is given the measured "
                       + " and ".join(x for x, on in (("traffic", traffic == "measured"), ("background", background == "measured"),
                                                      ("speed", speed == "measured")) if on)
                       + "; the result is not a prediction", err=True)
        checks = []
        for path in files:
            click.echo(f"checking {path.stem} ...", err=True)
            c = check_scenario(path, duration_s=duration, replications=replications, overrides=overrides, seed=seed, keep_frames=directory is not None, background=background, traffic=traffic,
                              speed=speed, gateway=gateway, remeasure=remeasure)
            checks.append(c)
            if directory is not None:
                from gwsim.output import provenance
                from simulator.scenario import load_scenario

                # the scenario as asked for (file, --set, profile): its hash and root seed, as every output carries
                sc = load_scenario(path, list(overrides))
                meta = provenance(sc, seed if seed is not None else sc.run.seed)
                ensure_dir(directory)
                atomic_write_parquet(directory / f"{path.stem}.measured.parquet", c.measured, meta)
                atomic_write_parquet(directory / f"{path.stem}.predicted.parquet", c.predicted, meta)
        from gwsim.output import provenance

        doc = {**suite_document(str(suite_dir), checks, traffic=traffic, background=background, speed=speed), **provenance()}
        if directory is not None:
            atomic_write_json(ensure_dir(directory) / "check.json", doc)
        if as_json:
            click.echo(json.dumps(doc, allow_nan=False, default=float))
        else:
            click.echo(format_checks(checks))
        return 0 if doc["passed"] else 1

    @calibrate.command()
    @click.argument("scenario", type=click.Path())
    @click.option("--measured", "measured_file", required=True, type=click.Path(), help="Measured records: real-engine parquet (gwsim measure --out) or CSV.")
    @click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN", help="CSV column mapping, e.g. latency_s=latency_ms (ms columns are converted); see --help of fit.")
    @click.option("--out", type=click.Path(), default=None, help="Directory for fitted.toml and fit.json [default: next to the measured file].")
    @click.option("-n", "--replications", type=click.IntRange(min=1), default=2, show_default=True, help="Simulator replications per evaluation (common random numbers).")
    @click.option("--max-evals", type=click.IntRange(min=4), default=40, show_default=True, help="Objective evaluations at most.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
    @click.option("--json", "as_json", is_flag=True)
    def fit(scenario, measured_file, mapping, out, replications, max_evals, overrides, as_json) -> None:
        """Fit the scenario's free parameters ([calibration] free = {"path" = [lo, hi]}) to measured records,
        minimising the distance between predicted and measured latency quantiles per endpoint and class."""
        from pathlib import Path

        from gwsim.calibration.fit import fit_scenario, read_measured, write_fit
        from simulator.errors import UsageError

        cols = {}
        for item in mapping:
            if "=" not in item:
                raise UsageError(f"--map {item}: expected FIELD=COLUMN")
            k, _, v = item.partition("=")
            cols[k.strip()] = v.strip()
        measured = read_measured(measured_file, cols)
        result = fit_scenario(scenario, measured, overrides=list(overrides), replications=replications, max_evals=max_evals)
        directory = Path(out) if out else Path(measured_file).parent
        paths = write_fit(result, directory)
        if as_json:
            click.echo(json.dumps({**result.report(), "outputs": [str(p) for p in paths]}))
        else:
            click.echo(result.format())
            for p in paths:
                click.echo(f"wrote {p}")
