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
        """Each query reads an index or a few rows, however many jobs a year left in the record: the totals
        over jobs done or failed are kept as they end (migration 0009), not summed here."""
        since = utcnow() - timedelta(seconds=RECENT_SECONDS)
        with self.db() as s:
            states = dict(s.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
            work = {kind: int(s.scalar(text(sql))) for kind, sql in BACKLOG_SQL.items()}
            oldest = s.scalar(text("SELECT min(created_at) FROM jobs WHERE status IN ('queued', 'running')"))
            audio_recent, decode_recent = s.execute(text(
                "SELECT coalesce(sum(duration), 0), coalesce(sum(decode_seconds), 0) FROM jobs "
                "WHERE status IN ('done', 'failed') AND finished_at >= :since AND status = 'done'"), {"since": since}).one()
            totals = dict(s.execute(text("SELECT name, value FROM job_totals")).all())
            buckets = s.execute(text("SELECT stage, le, count FROM stage_buckets ORDER BY stage, le")).all()
        audio, redrives = totals.get("audio_done", 0.0), totals.get("redrives", 0.0)
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
            failed.add_metric([failure.value], totals.get(f"failed:{failure.value}", 0))
        yield failed
        yield counter("murmur_redrives", "messages the reconciler sent again (attempts on jobs and chunks)",
                      value=float(redrives))
        stages = histogram("murmur_stage_seconds", "wall time of each stage per job done", labels=["stage"])
        for stage in STAGES:
            counts = {le: n for name, le, n in buckets if name == stage}
            stages.add_metric([stage], [(str(b), counts.get(float(b), 0)) for b in STAGE_BUCKETS]
                              + [("+Inf", counts.get(float("inf"), 0))], sum_value=totals.get(f"stage:{stage}:sum", 0.0))
        yield stages


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
