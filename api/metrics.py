"""Prometheus metrics: HTTP traffic, job outcomes and durations, and catalog gauges at scrape time."""

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

_JOB_BUCKETS = (1, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)


class Metrics:
    def __init__(self, catalog=None, engine=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shadowdb_api_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shadowdb_api_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "shadowdb_api_jobs_finished", "Jobs finished", ["kind", "status"], registry=self.registry
        )
        self.job_duration = Histogram(
            "shadowdb_api_job_duration_seconds",
            "Run time of finished jobs (one ansible-runner run)",
            ["kind"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self._catalog = catalog
        self._engine = engine
        self.registry.register(self)

    def bind(self, catalog, engine) -> None:
        self._catalog, self._engine = catalog, engine

    def job_finished(self, kind: str, status: str, seconds: float) -> None:
        self.jobs.labels(kind, status).inc()
        self.job_duration.labels(kind).observe(seconds)

    def observe_request(self, method: str, route: str, status: int, started: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(time.perf_counter() - started)

    # Custom collector: gauges read from the catalog when scraped.
    def describe(self):
        return []

    def collect(self):
        if self._catalog is None:
            return
        jobs = GaugeMetricFamily("shadowdb_api_jobs", "Unfinished jobs in the catalog", labels=["status"])
        counts = self._catalog.job_counts()
        for status in ("queued", "running"):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        tenants = GaugeMetricFamily("shadowdb_api_tenants", "Tenants in the catalog", labels=["state"])
        for state, n in sorted(self._catalog.tenant_state_counts().items()):
            tenants.add_metric([state], n)
        yield tenants
        check = self._catalog.last_drift_check()
        if check is not None:
            drift = GaugeMetricFamily(
                "shadowdb_api_drift_findings",
                "Findings of the last drift check (api/drift.py)",
                labels=["kind"],
            )
            kinds: dict[str, int] = {}
            for finding in check["findings"]:
                kinds[finding["kind"]] = kinds.get(finding["kind"], 0) + 1
            for kind, n in sorted(kinds.items()):
                drift.add_metric([kind], n)
            yield drift
            checked = GaugeMetricFamily(
                "shadowdb_api_drift_checked_timestamp_seconds",
                "When the last drift check ended (unix time)",
                labels=["ok"],
            )
            checked.add_metric(["false" if check["error"] else "true"], check["finished_at"].timestamp())
            yield checked
            if isinstance(check.get("backups"), dict):
                ages = GaugeMetricFamily(
                    "shadowdb_tenant_last_backup_age_seconds",
                    "Seconds since each tenant's last backup ended, as the last drift check read the"
                    " repository (a tenant with a stanza but no backup yet is absent)",
                    labels=["tenant"],
                )
                for tenant, stop in sorted(check["backups"].items()):
                    if isinstance(stop, int | float):
                        ages.add_metric([tenant], time.time() - stop)
                yield ages
        if self._engine is not None:
            local = GaugeMetricFamily("shadowdb_api_runs_in_process", "ansible-runner runs in this process")
            local.add_metric([], self._engine.running_count())
            yield local
