"""Charts of what-if results, as a planner would put them in a design review: a metric
against the swept settings with its confidence band, a tornado of one-at-a-time
sensitivities, the capacity search's probes against the SLO, and resource utilisation.

Charts are Altair (Vega-Lite) specifications; ``save_chart`` writes them as a standalone
HTML page and as PNG or SVG rendered by vl-convert (no browser needed).  Axis titles come
from ``gwsim.labels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import pandas as pd

from gwsim.labels import label, parameter_label, resource_label
from gwsim.output import atomic_write_bytes, atomic_write_text

WIDTH = 480
HEIGHT = 300


def _axis_type(frame: pd.DataFrame, column: str) -> str:
    return "quantitative" if pd.api.types.is_numeric_dtype(frame[column]) else "nominal"


#: Settings where 0 means "no cap" (shown as "none" in legends and column headers).
_ZERO_IS_NONE = ("max_conns_per_host", "count_interval")


def _as_text(column: pd.Series, parameter: str = "") -> pd.Series:
    """Legend values as people write them: 10 rather than 10.0, "none" for a cap of 0."""
    if pd.api.types.is_numeric_dtype(column):
        no_cap = parameter.rsplit(".", 1)[-1] in _ZERO_IS_NONE
        return column.map(lambda v: "none" if no_cap and v == 0 else f"{v:g}")
    return column.astype(str)


def _slo_text(metric: str, threshold: float) -> str:
    """The words on an SLO rule: the target with its unit (``SLO 4,000 ms``, ``SLO 99 %``)."""
    if metric in ("success_rate", "error_rate", "goodput") or metric.endswith(":success_rate"):
        return f"SLO {threshold * 100:g} %"
    if metric.endswith("_ms"):
        return f"SLO {threshold:,.0f} ms"
    if metric.endswith("_rps") or metric == "rate":
        return f"SLO {threshold:g} req/s"
    return f"SLO {threshold:g}"


def _rule_with_label(threshold: float, text: str, *, color: str = "#d62728") -> list[alt.Chart]:
    """A dashed horizontal rule at ``threshold`` and its label at the right end, so a reader
    knows what the line is without a legend."""
    # one row, not one per data row: the layer's data is the sweep's points, and a text drawn
    # once per point overprints itself into a smudge
    rule = alt.Chart().transform_aggregate(n="count()").mark_rule(color=color, strokeDash=[6, 4]).encode(y=alt.datum(threshold))
    words = alt.Chart().transform_aggregate(n="count()").mark_text(
        color=color, align="left", baseline="bottom", dy=-2, fontSize=11).encode(y=alt.datum(threshold), x=alt.value(4), text=alt.datum(text))
    return [rule, words]


def _fault_text(who: str, fault) -> str:  # noqa: ANN001 - a simulator.scenario.Fault
    what = {
        "slow": f"{who} {fault.latency_factor:g}x slower",
        "errors": f"{who} failing {fault.error_rate * 100:g} % of calls with {fault.error_status}",
        "outage": f"{who} refusing connections",
        "hang": f"{who} never answering",
        "reset": f"{who} resetting connections",
        "stall": f"{who} stalled",
    }[fault.kind]
    return f"{what} from {fault.start:g} s to {fault.end:g} s"


def _load_text(scenario) -> str:  # noqa: ANN001 - a simulator.scenario.Scenario
    wl = scenario.workload
    if wl.mode == "closed":
        text = f"{wl.users} users (closed loop)"
    elif wl.mode == "trace":
        text = "a request trace replayed" + (f" at {wl.time_scale:g}x its speed" if wl.time_scale != 1.0 else "")
    else:
        arr = wl.arrivals
        how = {"poisson": "Poisson", "constant": "evenly spaced", "burst": "bursts", "gamma": "gamma-renewal", "mmpp": "MMPP"}[arr.process]
        text = (f"bursts of {arr.size} every {arr.every:g} s ({arr.mean_rate:g} req/s)" if arr.process == "burst"
                else f"{arr.mean_rate:g} req/s {how}")
    if wl.rate_profile:
        text += f", a rate profile of {len(wl.rate_profile)} {'points' if wl.profile_shape == 'ramp' else 'steps'}"
    return text


def conditions(scenario, varied: str | None = None) -> str:  # noqa: ANN001 - a simulator.scenario.Scenario
    """One line saying what a chart's runs were put through: the load (or which setting of it
    was varied) and every fault injected, with its window (``Injected: alpha 5x slower from
    100 s to 250 s``), so the chart reads without the command that made it."""
    faults = []
    for name, provider in scenario.providers.items():
        faults += [_fault_text(f"provider {name}", f) for f in provider.faults]
    faults += [_fault_text("the AI service", f) for f in scenario.ai_service.faults]
    faults += [_fault_text("Redis", f) for f in scenario.redis.faults]
    faults += [_fault_text("the embedding API", f) for f in scenario.model_selection.semantic_cache.embedding_faults]
    load = f"Load: {varied}" if varied else f"Load: {_load_text(scenario)}"
    window = f" over {scenario.run.duration - scenario.run.warmup:g} s after a {scenario.run.warmup:g} s warm-up"
    return f"{load}{window}. " + (f"Injected: {'; '.join(faults)}." if faults else "No fault injected.")


def _title(text: str, subtitle: Sequence[str] | str | None) -> alt.TitleParams | str:
    if not subtitle:
        return text
    lines = [subtitle] if isinstance(subtitle, str) else list(subtitle)
    return alt.TitleParams(text=text, subtitle=lines, anchor="start")


def sweep_chart(points: pd.DataFrame, metric: str, params: Sequence[str], *, threshold: float | None = None,
                title: str | None = None, subtitle: Sequence[str] | str | None = None,
                companion: str | None = None, companion_threshold: float | None = None,
                replications: int | None = None) -> alt.TopLevelMixin:
    """``metric`` (with its 95 % interval as error bars) against the first parameter; the
    second parameter, if any, colours the lines; the third splits the chart into columns.
    A dashed red rule, labelled with its value, marks ``threshold`` (an SLO) when given.

    ``companion`` puts a second metric under the first (a P95 sweep with the success rate
    under it, so nobody picks a timeout that fails a tenth of the requests for its latency);
    ``subtitle`` says what was injected (the fault, the load); ``replications`` names what
    the error bars are (a 95 % confidence interval over that many replications)."""
    panels = [_sweep_panel(points, metric, params, threshold)]
    if companion is not None and companion != metric and companion in points.columns:
        panels.append(_sweep_panel(points, companion, params, companion_threshold))
    notes = [subtitle] if isinstance(subtitle, str) else list(subtitle or [])
    if any(f"{m}_lo" in points.columns for m in (metric, companion) if m):
        over = f" over {replications} replications" if replications else " over the replications"
        notes.append(f"Error bars: 95 % confidence interval of the mean{over}.")
    heading = title or f"{label(metric)} by {label(params[0]).lower()}"
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels).resolve_scale(color="shared")
    return chart.properties(title=_title(heading, notes))


def _sweep_panel(points: pd.DataFrame, metric: str, params: Sequence[str], threshold: float | None) -> alt.TopLevelMixin:
    if metric not in points.columns:
        raise KeyError(metric)
    keep = list(dict.fromkeys(c for c in (*params, metric, f"{metric}_lo", f"{metric}_hi") if c in points.columns))
    # Plain aliases for the chart's fields: dotted and colon-separated names (gateway.cpu_workers,
    # chat:p95_ms) are paths and type hints to Vega-Lite, and escaping them is not honoured by
    # every mark.  Titles come from the real names.  Only drawn columns go in (the spec embeds them).
    alias = {c: f"f{i}" for i, c in enumerate(keep)}
    frame = points[keep].rename(columns=alias).reset_index(drop=True)
    m, lo, hi = alias[metric], alias.get(f"{metric}_lo"), alias.get(f"{metric}_hi")
    has_ci = lo is not None and hi is not None and frame[lo].notna().any()
    x = params[0]
    if _axis_type(frame, alias[x]) == "quantitative":
        x_enc = alt.X(alias[x], type="quantitative", title=label(x), scale=alt.Scale(zero=False))
    else:
        x_enc = alt.X(alias[x], type="nominal", title=label(x), sort=None)
    # a share near 1 is read from a scale that does not start at 0 (99 % vs 97 % matters)
    share = metric.split(":")[-1] in ("success_rate", "error_rate", "goodput")
    y_enc = alt.Y(m, type="quantitative", title=label(metric), scale=alt.Scale(zero=not share),
                  axis=alt.Axis(format="%") if share else alt.Undefined)
    color = alt.Undefined
    if len(params) > 1:
        frame[alias[params[1]]] = _as_text(frame[alias[params[1]]], params[1])
        color = alt.Color(alias[params[1]], type="nominal", title=label(params[1]),
                          legend=alt.Legend(titleLimit=400, labelLimit=300), sort=None)
    if len(params) > 2:
        frame[alias[params[2]]] = _as_text(frame[alias[params[2]]], params[2])
    # further parameters keep their lines apart without a channel of their own
    detail = [alt.Detail(alias[p], type="nominal") for p in params[3:]] or alt.Undefined
    tooltip = [alt.Tooltip(alias[p], title=label(p)) for p in params]
    tooltip.append(alt.Tooltip(m, type="quantitative", title=label(metric), format=".4g"))
    # Layers carry no data of their own: the data sits on the layer chart, so a facet splits it.
    layers = [alt.Chart().mark_line(point=True).encode(x=x_enc, y=y_enc, color=color, tooltip=tooltip, detail=detail)]
    if has_ci:
        layers.append(alt.Chart().mark_errorbar(ticks=True).encode(
            x=x_enc, y=alt.Y(lo, type="quantitative", title=label(metric)), y2=alt.Y2(hi), color=color, detail=detail))
    if threshold is not None and math.isfinite(threshold):
        layers += _rule_with_label(threshold, _slo_text(metric, threshold))
    if len(params) > 2:
        return alt.layer(*layers, data=frame).properties(width=WIDTH // 2, height=HEIGHT).facet(
            column=alt.Column(alias[params[2]], type="nominal", title=label(params[2]), sort=None))
    return alt.layer(*layers, data=frame).properties(width=WIDTH, height=HEIGHT)


def tornado_chart(table: pd.DataFrame, metric: str, *, title: str | None = None, subtitle: Sequence[str] | str | None = None,
                  baseline: float | None = None, replications: int | None = None) -> alt.TopLevelMixin:
    """One bar per parameter from the metric's change with the parameter lowered to its change
    with the parameter raised, widest swing on top (a tornado).  Blue: parameter lowered,
    orange: raised; a black whisker at each bar's end spans the change's paired 95 % CI.
    ``table`` is ``sensitivity.SensitivityResult.table``; ``baseline`` (the metric's value with
    every parameter as it is) labels the zero line; ``subtitle`` says what was injected."""
    rows = []
    for _, r in table.iterrows():
        name = f"{parameter_label(r['parameter'])}: {r['base_value']}"
        for side, word in (("low", "parameter lowered"), ("high", "parameter raised")):
            delta = r[f"{side}_delta"]
            if delta is None or not math.isfinite(float(delta)):
                continue
            lo, hi = r.get(f"{side}_lo", math.nan), r.get(f"{side}_hi", math.nan)
            rows.append({"parameter": name, "variation": word, "change": str(r[f"{side}_label"]),
                         "delta": float(delta), "swing": r["swing"], "value": str(r[f"{side}_value"]),
                         "lo": float(lo) if lo is not None and math.isfinite(float(lo)) else math.nan,
                         "hi": float(hi) if hi is not None and math.isfinite(float(hi)) else math.nan})
    frame = pd.DataFrame(rows, columns=["parameter", "variation", "change", "delta", "swing", "value", "lo", "hi"])
    # the bar-end label: just the quantity ("280ms", not "lognormal median 280ms")
    frame["short"] = frame["value"].map(lambda v: str(v).split()[-1] if str(v).split() else "")
    # the value's words go past the whisker's end, not on it
    frame["at"] = [(h if d >= 0 else lo_) if math.isfinite(h) and math.isfinite(lo_) else d
                   for d, lo_, h in zip(frame["delta"], frame["lo"], frame["hi"])]
    order = list(dict.fromkeys(frame.sort_values("swing", ascending=False, kind="stable")["parameter"]))
    ends = pd.concat([frame["delta"], frame["lo"], frame["hi"]]).dropna()
    lo = min(0.0, float(ends.min())) if not ends.empty else -1.0
    hi = max(0.0, float(ends.max())) if not ends.empty else 1.0
    pad = 0.18 * ((hi - lo) or 1.0)  # room for the labels outside the bars
    x = alt.X("delta:Q", title=f"Change in {label(metric)} from baseline", scale=alt.Scale(domain=[lo - pad, hi + pad], nice=False))
    y = alt.Y("parameter:N", sort=order, title=None, axis=alt.Axis(labelLimit=420))
    bars = alt.Chart(frame).mark_bar(opacity=0.85).encode(
        y=y, x=x,
        color=alt.Color("variation:N", title=label("variation"),
                        scale=alt.Scale(domain=["parameter lowered", "parameter raised"], range=["#4c78a8", "#f58518"])),
        tooltip=["parameter:N", "change:N", "value:N", alt.Tooltip("delta:Q", format="+.4g")],
    )
    # the parameter's value at each bar's end, outside the bar; lowered above, raised below,
    # so two short bars on one row do not print on top of each other
    labels = []
    for side, dy in (("parameter lowered", -6), ("parameter raised", 6)):
        for cond, align, dx in ((alt.datum.delta >= 0, "left", 4), (alt.datum.delta < 0, "right", -4)):
            labels.append(alt.Chart(frame).transform_filter(alt.datum.variation == side).transform_filter(cond)
                          .mark_text(align=align, dx=dx, dy=dy, fontSize=10).encode(y=y, x="at:Q", text="short:N"))
    # the paired CI of each change: a thin whisker through the bar's end, on its own half of the row
    whiskers = [alt.Chart(frame).transform_filter(alt.datum.variation == side).transform_filter("isFinite(datum.lo)")
                .mark_rule(color="black", strokeWidth=1.2, yOffset=dy).encode(y=y, x="lo:Q", x2="hi:Q")
                for side, dy in (("parameter lowered", -4), ("parameter raised", 4))]
    zero_text = f"baseline {baseline:,.4g}" if baseline is not None and math.isfinite(baseline) else "baseline"
    zero_frame = pd.DataFrame({"x": [0.0], "text": [zero_text]})
    zero = alt.Chart(zero_frame).mark_rule(color="black").encode(x="x:Q")
    zero_words = alt.Chart(zero_frame).mark_text(align="left", baseline="bottom", dx=3, fontSize=10).encode(
        x="x:Q", y=alt.value(-2), text="text:N")
    height = max(120, 34 * len(order))
    notes = [subtitle] if isinstance(subtitle, str) else list(subtitle or [])
    over = f" over {replications} replications" if replications else ""
    notes.append(f"Bars: mean change from the baseline{over}; whiskers: its paired 95 % confidence interval.")
    return alt.layer(bars, *whiskers, *labels, zero, zero_words).properties(
        width=WIDTH, height=height, title=_title(title or f"Sensitivity of {label(metric)}", notes))


def capacity_chart(probes: pd.DataFrame, column: str, threshold: float, x: str, *, answer: float | None = None,
                   title: str | None = None, subtitle: Sequence[str] | str | None = None,
                   more: Sequence[tuple[str, float]] = ()) -> alt.TopLevelMixin:
    """The search's probes: the SLO metric (with its interval) against the load, the SLO as a
    dashed rule and the answer as a vertical line, each labelled on the chart.  ``more``: the
    other SLOs' (column, threshold), each a panel under the first on the same load axis, so the
    metric that decided a probe is on the chart whichever it was."""
    x_enc = alt.X("load:Q", title=label(x))
    wanted = [(c, t) for c, t in [(column, threshold), *more] if c in probes.columns]
    panels = [_capacity_panel(probes, c, t, x, x_enc, answer, words=i == 0) for i, (c, t) in enumerate(wanted)]
    reps = sorted(set(probes["replications"].astype(int)))
    notes = [subtitle] if isinstance(subtitle, str) else list(subtitle or [])
    notes.append("Error bars: 95 % confidence interval over "
                 + (f"{reps[0]} replications" if len(reps) == 1 else f"{reps[0]}-{reps[-1]} replications") + " per probe.")
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels).resolve_scale(color="shared")
    return chart.properties(title=_title(title or "Capacity search", notes))


def _capacity_panel(probes: pd.DataFrame, column: str, threshold: float, x: str, x_enc: alt.X,
                    answer: float | None, words: bool = True) -> alt.TopLevelMixin:
    frame = pd.DataFrame({
        "load": probes[x].astype(float),
        "value": probes[column].astype(float),
        "lo": probes[f"{column}_lo"].astype(float),
        "hi": probes[f"{column}_hi"].astype(float),
        "replications": probes["replications"].astype(int),
        "verdict": probes["feasible"].map({True: "meets SLOs", False: "misses SLOs"}),
    }).sort_values("load")
    share = column.split(":")[-1] in ("success_rate", "error_rate", "goodput")
    y_enc = alt.Y("value:Q", title=label(column), scale=alt.Scale(zero=not share), axis=alt.Axis(format="%") if share else alt.Undefined)
    points = alt.Chart(frame).mark_point(filled=True, size=70).encode(
        x=x_enc, y=y_enc,
        color=alt.Color("verdict:N", title="Probe", scale=alt.Scale(domain=["meets SLOs", "misses SLOs"],
                                                                      range=["#2ca02c", "#d62728"])),
        tooltip=[alt.Tooltip("load:Q", title=label(x), format=".4g"), alt.Tooltip("value:Q", title=label(column), format=".4g"),
                 alt.Tooltip("replications:Q", title="Replications")],
    )
    bars = alt.Chart(frame).mark_errorbar(ticks=True).encode(x=x_enc, y=alt.Y("lo:Q", title=label(column)), y2="hi:Q")
    slo = pd.DataFrame({"slo": [threshold], "text": [_slo_text(column, threshold)]})
    layers = [bars, points,
              alt.Chart(slo).mark_rule(color="#d62728", strokeDash=[6, 4]).encode(y="slo:Q"),
              # a share's probes sit above its SLO (near 100 %): its words go under the line
              alt.Chart(slo).mark_text(color="#d62728", align="left", baseline="top" if share else "bottom",
                                       dy=2 if share else -2, fontSize=11).encode(y="slo:Q", x=alt.value(4), text="text:N")]
    if answer is not None:
        found = pd.DataFrame({"answer": [answer], "text": [f"answer {answer:,.4g}"]})
        layers.append(alt.Chart(found).mark_rule(color="#2ca02c").encode(x="answer:Q"))
        if words:  # named once, in the top panel; the same line runs through the others
            layers.append(alt.Chart(found).mark_text(color="#2ca02c", align="left", baseline="top", dx=4, fontSize=11).encode(
                x="answer:Q", y=alt.value(4), text="text:N"))
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT if not share else HEIGHT * 2 // 3)


def utilisation_chart(util: pd.DataFrame, *, title: str | None = None, subtitle: Sequence[str] | str | None = None) -> alt.TopLevelMixin:
    """Horizontal bars of each resource's utilisation (0-100 %) with a rule at 100 %.
    ``util`` has columns resource, utilisation (fraction)."""
    frame = util.copy()
    frame["label"] = frame["resource"].map(resource_label)
    frame["percent"] = frame["utilisation"] * 100.0
    order = list(frame.sort_values("percent", ascending=False)["label"])
    bars = alt.Chart(frame).mark_bar().encode(
        y=alt.Y("label:N", sort=order, title=label("resource")),
        x=alt.X("percent:Q", title="Utilisation (% of capacity)", scale=alt.Scale(domain=[0, max(100.0, float(frame["percent"].max()))])),
        color=alt.condition(alt.datum.percent >= 85, alt.value("#d62728"), alt.value("#4c78a8")),
        tooltip=["label:N", alt.Tooltip("percent:Q", format=".1f")],
    )
    full_frame = pd.DataFrame({"x": [100.0], "text": ["100 % = saturated"]})
    full = alt.Chart(full_frame).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    words = alt.Chart(full_frame).mark_text(align="right", baseline="top", dx=-3, fontSize=10).encode(
        x="x:Q", y=alt.value(2), text="text:N")
    notes = [subtitle] if isinstance(subtitle, str) else list(subtitle or [])
    notes.append("Red: at least 85 % busy.")
    return alt.layer(bars, full, words).properties(width=WIDTH, height=max(100, 34 * len(order)),
                                                   title=_title(title or "Resource utilisation", notes))


def save_chart(chart: alt.TopLevelMixin, stem: str | Path, formats: Sequence[str] = ("html", "png")) -> list[Path]:
    """Write ``stem.html`` and ``stem.png`` (or ``.svg``) atomically; returns the paths."""
    import vl_convert as vlc

    stem = Path(stem)
    spec = chart.to_json()
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            # inline the Vega scripts so the page works offline (no CDN)
            atomic_write_text(path, chart.to_html(inline=True))
        elif fmt == "png":
            atomic_write_bytes(path, vlc.vegalite_to_png(spec, scale=2))
        elif fmt == "svg":
            atomic_write_text(path, vlc.vegalite_to_svg(spec))
        else:
            raise ValueError(f"expected a chart format html, png or svg, got {fmt!r}")
        written.append(path)
    return written
