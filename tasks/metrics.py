"""Prometheus metrics of the fleet, read on each scrape from its record (Postgres) and its broker.

`murmur exporter` serves them. The work left, per worker kind, is counted in
Postgres (`BACKLOG_SQL`), not in the broker: on Redis a queue lives in one
list per priority step and a message a worker holds sits in the `unacked`
hash, so one `LLEN` misses most of a backlog. The Kubernetes autoscaler reads
the same SQL (deploy/k8s/base/scaledobjects.yaml; a test checks the two agree).

Each GPU worker serves its own batch metrics on MURMUR_METRICS_PORT
(`BatchMetrics`): how full its batches are and how long they take.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from murmur.db.models import utcnow
from murmur.settings import Settings, is_redis
from murmur.tasks.app import QUEUES

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

# A failed job's reason, sorted into a few classes an operator alerts on differently.
FAILURE_CLASSES = (
    ("gave_up", r"MURMUR_MAX_ATTEMPTS"),
    ("limit", r"MURMUR_MAX_DURATION|MURMUR_MAX_BYTES|longer than|larger than"),
    ("forbidden", r"MURMUR_ALLOWED_ROOTS|MURMUR_MODEL_DIRS|not allowed|not a public address"),
    ("source", r"no such file|not found|cannot (read|open|download|reach)|denied|s3://"),
    ("input", r"not a readable audio|invalid|unknown (option|language|model)|must be|no audio|not a|expected"),
)


def failure_class(reason: str | None) -> str:
    """The class of a failed job's reason: gave_up, limit, forbidden, source, input or internal."""
    for name, pattern in FAILURE_CLASSES:
        if reason and re.search(pattern, reason, flags=re.IGNORECASE):
            return name
    return "internal"


def backlog(db: sessionmaker[Session], kind: str) -> int:
    """The work left for `kind` ("cpu" or "gpu") workers, as the autoscaler counts it."""
    with db() as s:
        return int(s.scalar(text(BACKLOG_SQL[kind])))


def broker_messages(url: str) -> Callable[[], dict[tuple[str, str], int]]:
    """A function counting each queue's messages: (queue, "waiting" or "delivered") → count.

    On Redis, waiting is summed over every priority list and delivered is read
    from the `unacked` hash; RabbitMQ tells only the waiting count.
    """
    if is_redis(url):
        return _redis_messages(url)
    from murmur.tasks.redis_backend import queue_backlog

    counters = {queue: queue_backlog(url, queue) for queue in QUEUES.values()}
    return lambda: {(queue, "waiting"): count() for queue, count in counters.items()}


def _redis_messages(url: str) -> Callable[[], dict[tuple[str, str], int]]:
    import redis

    from murmur.tasks.redis_backend import priority_keys

    client = redis.Redis.from_url(url)
    keys = {queue: priority_keys(queue) for queue in QUEUES.values()}

    def count() -> dict[tuple[str, str], int]:
        pipe = client.pipeline(transaction=False)
        for queue_keys in keys.values():
            for key in queue_keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        counts = {(queue, "waiting"): sum(next(lengths) for _ in queue_keys) for queue, queue_keys in keys.items()}
        for queue in keys:
            counts[(queue, "delivered")] = 0
        for _, raw in client.hscan_iter("unacked"):
            try:
                routing_key = json.loads(raw)[2]  # kombu keeps [message, exchange, routing key]
            except (ValueError, IndexError, TypeError):
                continue
            if (routing_key, "delivered") in counts:
                counts[(routing_key, "delivered")] += 1
        return counts

    return count


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
            errors = s.execute(text("SELECT error, count(*) FROM jobs WHERE status = 'failed' GROUP BY error")).all()
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
        failures = counter("murmur_jobs_failed", "failed jobs in the record, by the class of their reason",
                           labels=["reason"])
        classes = dict.fromkeys([c for c, _ in FAILURE_CLASSES] + ["internal"], 0)
        for error, n in errors:
            classes[failure_class(error)] += n
        for name, n in classes.items():
            failures.add_metric([name], n)
        yield failures
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


class BatchMetrics:
    """A GPU worker's own batches: fill ratio and time, served on MURMUR_METRICS_PORT."""

    def __init__(self, batch_size: int) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.batch_size = batch_size
        self.registry = CollectorRegistry()
        self.fill = Histogram("murmur_batch_fill_ratio", "chunks in a decoded batch over the batch size",
                              buckets=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0), registry=self.registry)
        self.seconds = Histogram("murmur_batch_seconds", "wall time of a decoded batch",
                                 buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)

    def observe(self, chunks: int, seconds: float) -> None:
        self.fill.observe(chunks / self.batch_size)
        self.seconds.observe(seconds)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, registry=self.registry)


def serve(db: sessionmaker[Session], settings: Settings, port: int, address: str = "127.0.0.1") -> None:
    """Serve the fleet's metrics until the process is stopped."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(FleetCollector(db, settings))
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("murmur exporter: metrics on http://%s:%d/metrics", address, port)
    thread.join()
