"""Running many scenario variants the way a capacity planner's batch jobs do: one task per
(variant, replication), spread over local worker processes or a Dask cluster, each task
boiled down in its worker to one row of per-replication metrics (latency percentiles,
success, throughput, queueing wait, and the utilisation of each resource).

A task's result depends only on (scenario, replication, seed), never on where or in which
order it ran, so a local pool and a Dask cluster give identical numbers, and variants run
with the same seed see the same traffic (common random numbers).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.engine import ignore_sigint, run_replication
from simulator.errors import PartialResults, UsageError
from simulator.records import STAGES
from simulator.scenario import LLMServerLatency, Scenario, apply_overrides, read_scenario_data, scenario_from_data
from simulator.stats import t_interval

log = logging.getLogger(__name__)

#: Stage columns that are time spent waiting in a queue (not doing work).
WAIT_STAGES = ("client_wait_s", "cpu_wait_s", "ai_pool_wait_s", "ai_queue_s", "provider_pool_wait_s", "provider_queue_s")
#: Latency columns (ms) of a metrics row.
LATENCY_COLUMNS = ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
#: Metrics of a row that get a mean and a 95 % interval when replications are aggregated.
BASE_METRICS = ("count", "offered_rps", "throughput_rps", "success_rate", "error_rate", *LATENCY_COLUMNS, "wait_ms")
#: Columns (ms) of a row of a scenario whose traffic streams: TTFT and TPOT of the successful streamed requests.
STREAM_COLUMNS = tuple(f"{m}_{k}_ms" for m in ("ttft", "tpot") for k in ("mean", "p50", "p90", "p95", "p99"))


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class ScenarioSource:
    """A scenario file and the overrides every variant shares (``--set``)."""

    path: str
    overrides: tuple[str, ...] = ()

    def data(self, extra: Sequence[str] = ()) -> dict[str, Any]:
        raw = read_scenario_data(self.path)
        return apply_overrides(raw, list(self.overrides) + list(extra), self.path)

    def build(self, extra: Sequence[str] = (), transform: Callable[[dict], dict] | None = None,
              extra_flag: str | None = None) -> Scenario:
        """The scenario with the shared and ``extra`` overrides, then ``transform`` on the raw data.

        A bad value one of them set is named after its flag (``--set KEY=VALUE``, or
        ``extra_flag KEY=VALUE`` for an ``extra`` one) rather than after the file."""
        data = self.data(extra)
        if transform is not None:
            data = transform(copy.deepcopy(data))
        blame = [f"--set {o}" for o in self.overrides] + ([f"{extra_flag} {e}" for e in extra] if extra_flag else [])
        return scenario_from_data(data, self.path, Path(self.path).parent, blame)


def get_path(data: dict[str, Any], key: str) -> Any:
    """The raw value at a dotted path of scenario data (KeyError when absent)."""
    node: Any = data
    for part in key.split("."):
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node[part]
    return node


# --------------------------------------------------------------------------- metrics


def _latency_stats(lat_ms: np.ndarray) -> dict[str, float]:
    if lat_ms.size == 0:
        return {c: math.nan for c in LATENCY_COLUMNS}
    p50, p90, p95, p99 = np.percentile(lat_ms, [50.0, 90.0, 95.0, 99.0])
    return {"mean_ms": float(lat_ms.mean()), "p50_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95),
            "p99_ms": float(p99), "max_ms": float(lat_ms.max())}


def _stream_stats(win: pd.DataFrame, ok: np.ndarray) -> dict[str, float]:
    sel = ok & win["stream"].to_numpy(dtype=bool)
    out = {}
    for metric in ("ttft", "tpot"):
        values = win[f"{metric}_s"].to_numpy(dtype="float64")[sel]
        values = values[np.isfinite(values)] * 1000.0
        if values.size:
            p50, p90, p95, p99 = np.percentile(values, [50.0, 90.0, 95.0, 99.0])
            stats = {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99)}
        else:
            stats = dict.fromkeys(("mean", "p50", "p90", "p95", "p99"), math.nan)
        out.update({f"{metric}_{k}_ms": v for k, v in stats.items()})
    return out


def _block(win: pd.DataFrame, span: float, streams: bool = False, goodput: Sequence[Any] = ()) -> dict[str, float]:
    count = len(win)
    ok = win["outcome"].to_numpy() == "ok"
    n_ok = int(ok.sum())
    row = {
        "count": float(count),
        "offered_rps": count / span,
        "throughput_rps": n_ok / span,
        "success_rate": n_ok / count if count else math.nan,
        "error_rate": 1.0 - n_ok / count if count else math.nan,
    }
    row.update(_latency_stats(win["latency_s"].to_numpy(dtype="float64")[ok] * 1000.0))
    if n_ok:
        waits = win.loc[ok, list(WAIT_STAGES)].to_numpy(dtype="float64").sum(axis=1)
        row["wait_ms"] = float(waits.mean()) * 1000.0
    else:
        row["wait_ms"] = math.nan
    if streams:
        row.update(_stream_stats(win, ok))
    if goodput:
        from gwsim.whatif.slo import goodput_share

        row["goodput"] = goodput_share(win, goodput)
    return row


def utilisation(scenario: Scenario, win: pd.DataFrame, gauges: pd.DataFrame) -> dict[str, float]:
    """Busy share of each finite resource over the measurement window (0..1, may exceed 1
    slightly at the window's edges).

    From the records' stage columns: gateway CPU (cpu_s over cores), each provider with a
    concurrency limit (provider_s of the requests it served over its slots; a failed request's
    time goes to the first candidate), the AI service (work per request from the scenario's
    batch model, with the mean batch inferred from the queue the gauges saw), the Redis pool
    (cache and prompt-cache time over its connections), and an llm provider's decode (tokens
    it generated over its decode throughput) and prefill (its prompts' prefill time, from the
    records' input tokens, over the time).  From the gauges (sampled every
    ``run.window``): the AI-service connection pool (in use over max_conns_per_host) and the
    client's concurrency cap (in flight over the cap).
    """
    run = scenario.run
    span = run.duration - run.warmup
    out: dict[str, float] = {}
    if win.empty or span <= 0:
        return out
    g = gauges[(gauges["at"] >= run.warmup) & (gauges["at"] < run.duration)] if not gauges.empty else gauges
    gw = scenario.gateway
    cpu_s = float(win["cpu_s"].sum())
    if cpu_s > 0:  # a scenario without gateway CPU cost has no CPU to saturate
        out["cpu"] = cpu_s / (gw.cpu_workers * span)
    order = scenario.provider_order()
    served = win["provider"].astype(str).to_numpy()
    prov_s = win["provider_s"].to_numpy(dtype="float64")
    for name, cfg in scenario.providers.items():
        if cfg.concurrency:
            mine = served == name
            if order and name == order[0]:
                mine |= served == ""
            out[f"provider:{name}"] = float(prov_s[mine].sum()) / (cfg.concurrency * span)
        lat = cfg.latency
        if isinstance(lat, LLMServerLatency):
            ok = (served == name) & (win["outcome"].to_numpy() == "ok")
            out[f"decode:{name}"] = float(win["output_tokens"].to_numpy(dtype="float64")[ok].sum()) / (lat.decode_tokens_per_s * span)
            inputs = win["input_tokens"].to_numpy(dtype="float64")[ok]
            out[f"prefill:{name}"] = float((lat.prefill_base.mean + inputs / lat.prefill_tokens_per_s).sum()) / span
    ai = scenario.ai_service
    ai_rows = win["ai_service_s"].to_numpy(dtype="float64") > 0
    if ai_rows.any():
        # Work per request: its share of the batch's fixed time plus its own item time and
        # post-processing.  The batch size is not recorded, so take what the queue allowed:
        # a worker takes min(queue + 1, max_batch_size) items.
        mean_queue = float(g["ai_queue"].mean()) if not g.empty else 0.0
        batch = float(np.clip(mean_queue / max(ai.workers, 1) + 1.0, 1.0, ai.max_batch_size))
        works = {}
        extras = {}
        for ep_name, ep in scenario.endpoints.items():
            for klass in ep.classes:
                works[(ep_name, klass.name)] = klass.ai_work
                extras[(ep_name, klass.name)] = klass.ai_extra.mean
        sub = win.loc[ai_rows, ["endpoint", "request_class"]]
        keys = list(zip(sub["endpoint"].astype(str), sub["request_class"].astype(str)))
        per_item = ai.per_item.mean
        busy = sum(per_item * works.get(k, 1.0) + extras.get(k, 0.0) for k in keys) + len(keys) * ai.batch_base.mean / batch
        out["ai_service"] = busy / (ai.workers * span)
    pool = scenario.model_selection.ai_client.pool
    if pool.max_conns_per_host and not g.empty:
        out["ai_pool"] = float(g["ai_pool_in_use"].mean()) / pool.max_conns_per_host
    redis_s = float(win["cache_s"].sum() + win["prompt_cache_s"].sum())
    if redis_s > 0:
        out["redis_pool"] = redis_s / (scenario.redis.pool_size * span)
    cap = scenario.workload.concurrency_cap
    if cap and not g.empty:
        out["client_cap"] = float(g["in_flight"].mean()) / cap
    return out


def streams(scenario: Scenario) -> bool:
    """Whether any of the scenario's classes asks for streamed replies."""
    return any(ep.streams(c) for ep in scenario.endpoints.values() for c in ep.classes)


def metrics_row(scenario: Scenario, records: pd.DataFrame, gauges: pd.DataFrame, goodput: Sequence[Any] = ()) -> dict[str, float]:
    """One replication's metrics over the measurement window.

    Columns: those of ``BASE_METRICS`` for all traffic (and ``STREAM_COLUMNS`` when it streams,
    ``goodput`` when ``goodput`` targets are given: ``gwsim.whatif.slo.goodput_share``), the
    same prefixed ``<endpoint>:`` for each endpoint when there are several, ``util:<resource>``
    for each finite resource and ``stage:<stage>_ms`` (mean time per successful request in
    each stage).
    """
    run = scenario.run
    span = run.duration - run.warmup
    arrived = records["arrived_at"].to_numpy(dtype="float64")
    win = records.loc[(arrived >= run.warmup) & (arrived < run.duration)]
    streamed = streams(scenario)
    row = _block(win, span, streamed, goodput)
    if len(scenario.endpoints) > 1:
        ep = win["endpoint"].astype(str).to_numpy()
        for name in scenario.endpoints:
            for key, value in _block(win.loc[ep == name], span, streamed, goodput).items():
                row[f"{name}:{key}"] = value
    for name, value in utilisation(scenario, win, gauges).items():
        row[f"util:{name}"] = value
    ok = win["outcome"].to_numpy() == "ok"
    for stage in STAGES:
        row[f"stage:{stage[:-2]}_ms"] = float(win[stage].to_numpy(dtype="float64")[ok].mean()) * 1000.0 if ok.any() else math.nan
    return row


def replication_metrics(scenario: Scenario, replication: int, seed: int, goodput: Sequence[Any] = ()) -> dict[str, float]:
    """Run one replication and reduce it to its metrics row (runs in a worker)."""
    result = run_replication(scenario, replication, seed)
    return metrics_row(scenario, result.records, result.gauges, goodput)


def _task(args: tuple) -> dict[str, float]:
    """``(scenario, replication, seed)``, or with the goodput targets as a fourth item."""
    scenario, replication, seed, *goodput = args
    return replication_metrics(scenario, replication, seed, goodput[0] if goodput else ())


# --------------------------------------------------------------------------- executors


Progress = Callable[[int, int], None]



class LocalExecutor:
    """Tasks in local worker processes (one per core by default); in-process with one worker."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[tuple[Scenario, int, int]], progress: Progress | None = None) -> list[dict]:
        """Results in the order of ``tasks``.  Ctrl-C raises ``PartialResults`` whose
        ``finished[i]`` is task i's result or None."""
        total = len(tasks)
        if self.workers == 1 or total <= 1:
            results: list[dict | None] = [None] * total
            try:
                for i, task in enumerate(tasks):
                    results[i] = _task(task)
                    if progress is not None:
                        progress(i + 1, total)
            except KeyboardInterrupt:
                raise PartialResults(results, total) from None
            return results  # type: ignore[return-value]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=ignore_sigint)
        futures: dict[Future, int] = {self._pool.submit(_task, t): i for i, t in enumerate(tasks)}
        out: list[dict | None] = [None] * total
        done_count = 0
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    out[futures[fut]] = fut.result()
                    done_count += 1
                    if progress is not None:
                        progress(done_count, total)
        except BaseException as exc:
            # Ctrl-C (or a failed task): stop the workers now rather than let the pool's exit
            # wait for every queued task; no worker outlives the run.
            for fut in pending:
                fut.cancel()
            self._terminate()
            if isinstance(exc, KeyboardInterrupt):
                raise PartialResults(out, total) from None
            raise
        return out  # type: ignore[return-value]

    def _terminate(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"<LocalExecutor workers={self.workers} pool={'up' if self._pool else 'down'}>"


class DaskExecutor:
    """Tasks on a Dask cluster: ``"local"`` starts a LocalCluster of worker processes (closed
    with the executor), anything else is a scheduler address such as ``tcp://10.0.0.5:8786``.
    Workers of a remote cluster need gwsim installed."""

    def __init__(self, address: str, workers: int | None = None) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - dask is a dependency
            raise UsageError("--dask: expected dask.distributed to be installed (pip install 'dask[distributed]')") from None
        self.address = address
        self._cluster = None
        if logging.getLogger().getEffectiveLevel() > logging.INFO:
            # dask logs its start-up at INFO on its own handlers; show it only with gwsim -v
            logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            if address == "local":
                n = max(1, workers if workers is not None else (os.cpu_count() or 1))
                # CRITICAL, not ERROR: a worker whose heartbeat meets the closing scheduler logs
                # the closed stream with a traceback (seen in CI, 2026-12-07); a task's own error
                # reaches the client through its future, not through the worker's log
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                             silence_logs=logging.CRITICAL)
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout="10s")
        except OSError as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise UsageError(f"--dask {address}: expected a reachable Dask scheduler, got {exc}") from None

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        self.client, self._cluster = None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def run(self, tasks: Sequence[tuple[Scenario, int, int]], progress: Progress | None = None) -> list[dict]:
        from dask.distributed import as_completed

        total = len(tasks)
        futures = self.client.map(_task, list(tasks), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[dict | None] = [None] * total
        try:
            for n, fut in enumerate(as_completed(futures), start=1):
                out[index[fut.key]] = fut.result()
                if progress is not None:
                    progress(n, total)
        except BaseException as exc:
            self.client.cancel(futures)
            if isinstance(exc, KeyboardInterrupt):
                raise PartialResults(out, total) from None
            raise
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<DaskExecutor address={self.address} open={self.client is not None}>"


def make_executor(workers: int | None = None, dask: str | None = None) -> LocalExecutor | DaskExecutor:
    """``dask=None``: local processes; ``"local"``: a LocalCluster; otherwise a scheduler address."""
    if dask:
        return DaskExecutor(dask, workers)
    return LocalExecutor(workers)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One configuration to evaluate: its labels (what distinguishes it) and its scenario."""

    labels: dict[str, Any]
    scenario: Scenario
    extra: dict[str, Any] = field(default_factory=dict)


def run_variants(
    variants: Sequence[Variant],
    executor: LocalExecutor | DaskExecutor,
    *,
    replications: int,
    seed: int,
    first_replication: int = 0,
    progress: Progress | None = None,
    goodput: Sequence[Any] = (),
) -> pd.DataFrame:
    """Per-replication metrics of every variant: one row per (variant, replication).

    Columns: ``variant`` (index in ``variants``), the variants' label keys, ``replication``,
    then the metrics (``goodput`` among them when its per-request targets are given).  Every
    variant uses replications first_replication.. with the same seed, so replication i of
    each variant saw the same arrivals.  Ctrl-C raises ``PartialResults`` whose ``finished``
    is the frame of the rows that finished.
    """
    extra = (tuple(goodput),) if goodput else ()
    tasks = [(v.scenario, r, seed, *extra) for v in variants for r in range(first_replication, first_replication + replications)]
    try:
        results: list[dict | None] = executor.run(tasks, progress)
    except PartialResults as stop:
        # what finished, as rows; ``finished`` of the re-raised interrupt is that frame
        raise PartialResults(_rows(variants, replications, first_replication, stop.finished), len(tasks)) from None
    return _rows(variants, replications, first_replication, results)


def _rows(variants: Sequence[Variant], replications: int, first_replication: int, results: list[dict | None]) -> pd.DataFrame:
    """One row per finished (variant, replication); unfinished tasks (None) are left out."""
    rows = []
    k = 0
    for i, v in enumerate(variants):
        for r in range(first_replication, first_replication + replications):
            if results[k] is not None:
                row: dict[str, Any] = {"variant": i, **v.labels, "replication": r}
                row.update(results[k])  # type: ignore[arg-type]
                rows.append(row)
            k += 1
    return pd.DataFrame(rows)


def metric_columns(frame: pd.DataFrame, label_keys: Iterable[str] = ()) -> list[str]:
    skip = {"variant", "replication", *label_keys}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]


#: Metrics that are shares of requests (0..1), with or without an ``<endpoint>:`` prefix.
SHARE_COLUMNS = ("success_rate", "error_rate", "goodput")


def metric_range(column: str) -> tuple[float, float | None]:
    """The values a metrics column can take: ``(0, 1)`` for a share of requests, ``(0, None)``
    for every other one (counts, rates, times and utilisations are never negative; a
    utilisation can pass 1 slightly at the window's edges, so it gets no ceiling)."""
    return (0.0, 1.0) if column.rsplit(":", 1)[-1] in SHARE_COLUMNS else (0.0, None)


def replication_interval(column: str, values: Sequence[float] | np.ndarray) -> tuple[float, float] | None:
    """The 95 % t interval over one column's per-replication values, cut to ``metric_range``:
    the interval every what-if command prints next to the mean over replications."""
    floor, ceiling = metric_range(column)
    return t_interval(values, floor=floor, ceiling=ceiling)


def aggregate(per_rep: pd.DataFrame, label_keys: Sequence[str]) -> pd.DataFrame:
    """One row per variant: every metric's mean over replications and its 95 % t interval
    cut to the values the metric can take (``replication_interval``; columns ``<metric>``,
    ``<metric>_lo``, ``<metric>_hi``) and ``replications``."""
    metrics = metric_columns(per_rep, label_keys)
    rows = []
    for variant, sub in per_rep.groupby("variant", sort=True):
        row: dict[str, Any] = {"variant": int(variant)}
        for key in label_keys:
            row[key] = sub[key].iloc[0]
        row["replications"] = int(len(sub))
        for col in metrics:
            vals = sub[col].to_numpy(dtype="float64")
            finite = vals[np.isfinite(vals)]
            row[col] = float(finite.mean()) if finite.size else math.nan
            ci = replication_interval(col, finite)
            row[f"{col}_lo"] = ci[0] if ci else math.nan
            row[f"{col}_hi"] = ci[1] if ci else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
