"""ctbot's Prometheus metrics, read at scrape time from what ctbot already keeps.

Check states come from the health monitor (what `health --json` shows); machines, jobs and
commands from the store, so that work done by `ctbot cmd` counts as well as `serve`'s.
Names and units follow Prometheus's naming practices (``_seconds``, ``_total``).

    ctbot_check_up{machine,check,family}           1 up, 0 down; absent while UNKNOWN
    ctbot_check_rtt_seconds{machine,check,family}  last RTT; NaN when the last result
                                                   failed; absent while UNKNOWN
    ctbot_check_flapping{machine,check,family}     1 while flapping
    ctbot_machines{state}                          machines by observed state
    ctbot_jobs_total{kind,outcome}                 finished jobs
    ctbot_job_duration_seconds{kind}               histogram of finished jobs' run time
    ctbot_commands_total{verb}                     audited commands
    ctbot_scheduler_lag_seconds                    how late health sweeps started
    ctbot_health_sweep_seconds                     how long the last sweep took
    ctbot_health_sweeps_skipped_total              sweeps skipped: the last still ran
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.core.store import Store
from services.health.service import Health
from services.health.state import State
from services.health.targets import labels_of
from services.machines.records import MachineStore
from services.machines.status import observe

JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry for ctbot; ``render()`` is the body of GET /metrics."""

    def __init__(self, store: Store, health: Health, machines: MachineStore, *,
                 verb_of: Callable[[str], str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(store, health, machines, verb_of))
        self.sweeps_skipped = CounterMetric(
            "ctbot_health_sweeps_skipped", "Sweeps not run because the one before was "
            "still running.", registry=self.registry)
        self.scheduler_lag = Histogram(
            "ctbot_scheduler_lag_seconds", "How late health sweeps started after their "
            "scheduled time.", buckets=LAG_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Collector:
    def __init__(self, store: Store, health: Health, machines: MachineStore,
                 verb_of: Callable[[str], str]) -> None:
        self.store, self.health, self.machines, self.verb_of = store, health, machines, verb_of

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        yield from self._checks()
        yield self._machines()
        yield from self._jobs()
        yield self._commands()
        sweep = self.health.monitor.last_sweep
        taken = GaugeMetricFamily("ctbot_health_sweep_seconds",
                                  "How long the last health sweep took.")
        if sweep is not None:
            taken.add_metric([], sweep.took)
        yield taken

    def _checks(self) -> Iterator[Metric]:
        labels = ["machine", "check", "family"]
        up = GaugeMetricFamily("ctbot_check_up", "1 if the check is up, 0 if down; absent "
                               "while unknown.", labels=labels)
        rtt = GaugeMetricFamily("ctbot_check_rtt_seconds", "The last round-trip time; NaN "
                                "when the last result failed.", labels=labels)
        flapping = GaugeMetricFamily("ctbot_check_flapping", "1 while the check is "
                                     "flapping (its up/down alerts paused).", labels=labels)
        names = labels_of(self.health.store.checks())
        for state in self.health.monitor.states():
            if state.effective is State.UNKNOWN:
                continue
            key = [state.machine, names.get((state.machine, state.check), state.check),
                   state.family]
            up.add_metric(key, 1.0 if state.effective is State.UP else 0.0)
            flapping.add_metric(key, 1.0 if state.flapping else 0.0)
            rtt.add_metric(key, state.last_rtt if state.last_ok and state.last_rtt is not None
                           else math.nan)
        yield up
        yield rtt
        yield flapping

    def _machines(self) -> Metric:
        counts: Counter[str] = Counter()
        for record in self.machines.all():
            running = record.nspawn if record.nspawn and record.nspawn.alive() else None
            counts[str(observe(record, running, {}).state)] += 1
        family = GaugeMetricFamily("ctbot_machines", "Machines by state.", labels=["state"])
        for state in ("running", "stopped", "starting", "stopping", "failed"):
            family.add_metric([state], float(counts.get(state, 0)))
        return family

    def _jobs(self) -> Iterator[Metric]:
        total = CounterMetricFamily("ctbot_jobs", "Finished jobs by kind and outcome.",
                                    labels=["kind", "outcome"])
        for row in self.store.query("SELECT kind, state, COUNT(*) FROM jobs WHERE state IN "
                                    "('succeeded', 'failed', 'interrupted') "
                                    "GROUP BY kind, state"):
            total.add_metric([row[0], row[1]], float(row[2]))
        yield total
        durations: dict[str, list[float]] = {}
        for row in self.store.query("SELECT kind, finished_at - started_at FROM jobs WHERE "
                                    "finished_at IS NOT NULL AND started_at IS NOT NULL"):
            durations.setdefault(row[0], []).append(max(float(row[1]), 0.0))
        histogram = HistogramMetricFamily("ctbot_job_duration_seconds",
                                          "How long finished jobs ran.", labels=["kind"])
        for kind, values in sorted(durations.items()):
            buckets: list[tuple[str, float]] = [
                (str(bound), float(sum(v <= bound for v in values))) for bound in JOB_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            histogram.add_metric([kind], buckets, sum_value=sum(values))
        yield histogram

    def _commands(self) -> Metric:
        counts: Counter[str] = Counter()
        for row in self.store.query("SELECT command, COUNT(*) FROM audit GROUP BY command"):
            counts[self.verb_of(row[0])] += int(row[1])
        family = CounterMetricFamily("ctbot_commands", "Audited commands by verb.",
                                     labels=["verb"])
        for verb, n in sorted(counts.items()):
            family.add_metric([verb], float(n))
        return family

