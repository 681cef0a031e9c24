"""`murmur exporter`: Prometheus metrics of the fleet, read on each scrape from its record (Postgres) and its broker.

The work left, per worker kind, is counted in Postgres (`BACKLOG_SQL`), not in
the broker: on Redis a queue lives in one list per priority step and a message
a worker holds sits in the `unacked` hash, so one `LLEN` misses most of a
backlog. The Kubernetes autoscaler reads the same SQL
(deploy/k8s/base/autoscaling.yaml; a test checks the two agree). Failed jobs
are counted by the class their failure was recorded with (`workers.errors.Failure`).

Each GPU worker serves its own batch metrics (`fleet.batcher.BatchMetrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from murmur.db.models import utcnow
from murmur.settings import Settings
from murmur.tasks.fleet.queues import broker_messages
from murmur.workers.errors import Failure

log = logging.getLogger("murmur")

# Work not yet done, queued or in a worker's hands: what each kind of worker is scaled on.
BACKLOG_SQL = {
    # jobs to prepare (not planned yet) or to assemble (every chunk decoded)
    "cpu": "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') "
           "AND (n_chunks IS NULL OR chunks_done >= n_chunks)",
    # chunks to decode, of running jobs
    "gpu": "SELECT count(*) FROM chunks JOIN jobs ON jobs.id = chunks.job_id "
           "WHERE jobs.status = 'running' AND chunks.status = 'pending'",
}
STAGES = ("prepare", "detect", "decode")
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RECENT_SECONDS = 3600  # the real-time factor is over jobs that ended this recently


def backlog(db: sessionmaker[Session], kind: str) -> int:
    """The work left for `kind` ("cpu" or "gpu") workers, as the autoscaler counts it."""
    with db() as s:
        return int(s.scalar(text(BACKLOG_SQL[kind])))


class FleetCollector:
    """Reads the fleet's state on each scrape; a part that cannot be read is left out and logged."""

    def __init__(self, db: sessionmaker[Session], settings: Settings) -> None:
        self.db = db
        self._messages = broker_messages(settings.broker_url)

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        up = GaugeMetricFamily("murmur_exporter_source_up", "1 when the exporter could read this source", labels=["source"])
        try:
            yield from self._from_database(CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
            up.add_metric(["database"], 1)
        except Exception:  # noqa: BLE001 - the database is away: say so, serve the rest
            log.warning("exporter: cannot read the database", exc_info=True)
            up.add_metric(["database"], 0)
        try:
            counts = self._messages()
            messages = GaugeMetricFamily("murmur_queue_messages", "messages in a broker queue, waiting or delivered to a "
                                         "worker and not yet acknowledged", labels=["queue", "state"])
            for (queue, where), n in sorted(counts.items()):
                messages.add_metric([queue, where], n)
            yield messages
            up.add_metric(["broker"], 1)
        except Exception:  # noqa: BLE001 - the broker is away
            log.warning("exporter: cannot read the broker", exc_info=True)
            up.add_metric(["broker"], 0)
        yield up

    def _from_database(self, counter, gauge, histogram) -> Iterator:
        since = utcnow() - timedelta(seconds=RECENT_SECONDS)
        with self.db() as s:
            states = dict(s.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
            work = {kind: int(s.scalar(text(sql))) for kind, sql in BACKLOG_SQL.items()}
            audio = s.scalar(text("SELECT coalesce(sum(duration), 0) FROM jobs WHERE status = 'done'"))
            oldest = s.scalar(text("SELECT min(created_at) FROM jobs WHERE status IN ('queued', 'running')"))
            audio_recent, decode_recent = s.execute(text(
                "SELECT coalesce(sum(duration), 0), coalesce(sum(decode_seconds), 0) FROM jobs "
                "WHERE status = 'done' AND finished_at >= :since"), {"since": since}).one()
            failures = dict(s.execute(text("SELECT failure, count(*) FROM jobs WHERE status = 'failed' GROUP BY failure")).all())
            redrives = s.scalar(text("SELECT (SELECT coalesce(sum(attempts), 0) FROM jobs) "
                                     "+ (SELECT coalesce(sum(attempts), 0) FROM chunks)"))
            stage_rows = {stage: s.execute(text(_histogram_sql(f"{stage}_seconds"))).one() for stage in STAGES}
        jobs = gauge("murmur_jobs", "jobs in the record, by state", labels=["state"])
        for state in ("queued", "running", "done", "failed"):
            jobs.add_metric([state], states.get(state, 0))
        yield jobs
        left = gauge("murmur_backlog", "work left for a worker kind, queued or in a worker's hands: jobs to prepare "
                     "or assemble (cpu), chunks to decode (gpu); the autoscaler's number", labels=["kind"])
        for kind, n in work.items():
            left.add_metric([kind], n)
        yield left
        yield counter("murmur_audio_transcribed_seconds", "seconds of audio in the jobs done", value=float(audio))
        age = (utcnow() - _aware(oldest)).total_seconds() if oldest else 0.0
        yield gauge("murmur_oldest_unfinished_job_age_seconds", "age of the oldest queued or running job (0: none)",
                    value=max(0.0, age))
        yield gauge("murmur_decode_realtime_factor", f"seconds of audio decoded per second of decoding, over the jobs "
                    f"done in the last {RECENT_SECONDS} s (0: none)",
                    value=float(audio_recent) / float(decode_recent) if decode_recent else 0.0)
        failed = counter("murmur_jobs_failed", "failed jobs in the record, by the class of their failure",
                         labels=["reason"])
        for failure in Failure:
            failed.add_metric([failure.value], failures.get(failure.value, 0))
        yield failed
        yield counter("murmur_redrives", "messages the reconciler sent again (attempts on jobs and chunks in the record)",
                      value=float(redrives))
        stages = histogram("murmur_stage_seconds", "wall time of each stage per job done", labels=["stage"])
        for stage, row in stage_rows.items():
            *cumulative, total, summed = row
            buckets = [(str(b), int(n)) for b, n in zip(STAGE_BUCKETS, cumulative)] + [("+Inf", int(total))]
            stages.add_metric([stage], buckets, sum_value=float(summed))
        yield stages


def _histogram_sql(column: str) -> str:
    counts = ", ".join(f"count(*) FILTER (WHERE {column} <= {b})" for b in STAGE_BUCKETS)
    return f"SELECT {counts}, count(*), coalesce(sum({column}), 0) FROM jobs WHERE status = 'done'"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def serve(db: sessionmaker[Session], settings: Settings, port: int, address: str = "127.0.0.1") -> None:
    """Serve the fleet's metrics until the process is stopped."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(FleetCollector(db, settings))
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("murmur exporter: metrics on http://%s:%d/metrics", address, port)
    thread.join()
