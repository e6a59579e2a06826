"""``gwsim fit workload``: a ``[workload]`` section fitted to a request trace, with its
goodness-of-fit figures (``gwsim.whatif.workload_fit``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from simulator.errors import UsageError

_FORMATS = ("azure2023", "csv", "jsonl")


def _duration(ctx, param, value):  # noqa: ANN001 - click callback
    if value is None:
        return None
    from simulator.units import UnitError, parse_duration

    try:
        seconds = float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from None
    return seconds


def _columns(text: str | None) -> dict[str, str] | None:
    from simulator.trace import ROLES

    if text is None:
        return None
    out = {}
    for item in text.split(","):
        role, sep, name = item.partition("=")
        role, name = role.strip(), name.strip()
        if not sep or not name:
            raise UsageError(f"--columns {text!r}: expected ROLE=COLUMN pairs separated by commas, got {item!r}")
        if role not in ROLES:
            raise UsageError(f"--columns: expected roles from {list(ROLES)}, got {role!r}")
        out[role] = name
    if "timestamp" not in out:
        raise UsageError("--columns: expected a timestamp=COLUMN pair, got none")
    return out


def _guess_format(path: Path) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return "csv"  # read_trace says what is wrong with the file
    names = {c.strip().strip('"') for c in header.split(",")}
    return "azure2023" if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= names else "csv"


def register(cli: click.Group) -> None:
    fit = cli.commands.get("fit")
    if fit is None:  # pragma: no cover - the what-if commands define the group
        @cli.group()
        def fit() -> None:
            """Fit distributions and workloads to measured data for a scenario file."""

    @fit.command("workload")
    @click.argument("trace", type=click.Path())
    @click.option("--format", "fmt", type=click.Choice(_FORMATS), default=None,
                  help="Trace format [default: azure2023 when the header has its columns, jsonl for .jsonl, else csv].")
    @click.option("--columns", default=None, metavar="ROLE=COLUMN,...",
                  help="Column mapping of a csv/jsonl trace: timestamp (required), endpoint, input_tokens, "
                       "output_tokens, status, latency; e.g. timestamp=ts,endpoint=model,output_tokens=out.")
    @click.option("--timestamp-unit", type=click.Choice(["s", "ms", "us", "ns", "datetime"]), default="s", show_default=True,
                  help="Unit of numeric timestamps, or datetime for ISO 8601 (csv, jsonl).")
    @click.option("--latency-unit", type=click.Choice(["s", "ms", "us"]), default="ms", show_default=True, help="Unit of the latency column.")
    @click.option("--bin", "bin_s", callback=_duration, default="60s", show_default=True, help="Rate-profile bin, e.g. 60s or 5min.")
    @click.option("--start", "start_s", callback=_duration, default="0s", show_default=True, help="Window start, from the trace's first request.")
    @click.option("--duration", "duration_s", callback=_duration, default=None, help="Window length [default: to the end].")
    @click.option("--endpoint", default="chat", show_default=True, help="Endpoint of every request when the trace names none.")
    @click.option("--process", type=click.Choice(["auto", "gamma", "mmpp"]), default="auto", show_default=True,
                  help="Arrivals within bins: the better fit of a gamma renewal and a 2-state MMPP, or one of them.")
    @click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Seed of the fitted workload's realisations (figures).")
    @click.option("-o", "--out", type=click.Path(), default=None, help="Write the [workload] section here (else print it after the figures).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object (figures and the fitted workload).")
    def fit_workload_cmd(trace, fmt, columns, timestamp_unit, latency_unit, bin_s, start_s, duration_s, endpoint, process,  # noqa: ANN001, ANN202
                         seed, out, as_json):
        """Fit a [workload] section to a request trace: the rate per bin, the burstiness within
        bins (gamma renewal or 2-state MMPP, whichever fits), the joint input/output token
        distribution and the endpoint mix; print trace-vs-fitted figures.

        TRACE is the Azure LLM inference trace 2023 (format azure2023), or any CSV/JSONL trace
        with --columns; '{data}/...' names a file in the data directory (GWSIM_DATA_DIR, else
        ../shared/data).
        """
        from gwsim.whatif.workload_fit import fit_payload, fit_workload, format_fit, to_toml
        from simulator.datadir import resolve
        from simulator.trace import TraceError, read_trace

        path, looked = resolve(trace)
        if looked:
            raise UsageError(f"{trace}: expected a trace file in the data directory, got nothing (looked in {looked})")
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not found" if not path.exists() else "not a regular file"
            raise UsageError(TraceError(trace, None, None, "a readable trace file", what).text())
        fmt = fmt or _guess_format(path)
        mapping = _columns(columns)
        if fmt != "azure2023" and mapping is None:
            raise UsageError(f"--columns: expected a column mapping for a {fmt} trace (e.g. timestamp=ts,output_tokens=out), got none")
        if fmt == "azure2023" and mapping is not None:
            raise UsageError("--columns: expected none with --format azure2023 (its columns are fixed), got a mapping")
        if out is not None:
            parent = Path(out).parent
            if not parent.is_dir():
                raise UsageError(f"{out}: expected a file in an existing directory, got no directory {str(parent)!r}")
        try:
            data = read_trace(path, fmt, mapping, timestamp_unit, latency_unit, shown=trace)
        except TraceError as exc:
            raise UsageError(exc.text()) from None
        fit = fit_workload(data, source=trace, format=fmt, bin_s=bin_s, start_s=start_s, duration_s=duration_s,
                           endpoint=endpoint, process=process, seed=seed)
        text = to_toml(fit)
        if out is not None:
            from gwsim.output import atomic_write_text

            atomic_write_text(out, text)
        if as_json:
            payload = fit_payload(fit)
            payload["toml"] = text
            payload["file"] = out
            click.echo(json.dumps(payload, allow_nan=False, default=float))
            return
        click.echo(format_fit(fit))
        if out is not None:
            click.echo(f"wrote {out}")
        else:
            click.echo("")
            click.echo(text, nl=False)
