"""The Celery app: its queues, routes and the delivery settings the task chain relies on.

Importing this module needs no broker; the connection opens on first use.
Operators point Celery's own tools at it: `celery -A murmur.tasks.fleet.app flower`.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from murmur.settings import get_settings, is_redis
from murmur.tasks.fleet.queues import CPU_QUEUE, QUEUE_OF_STEP, QUEUES
from murmur.tasks.fleet.transport import TRANSPORT
from murmur.tasks.jobs import MAX_PRIORITY


def create_app(broker: str | None = None) -> Celery:
    """The app for `broker` (default MURMUR_BROKER_URL); the task chain is loaded by workers only."""
    settings = get_settings()
    timeout = settings.visibility_timeout
    broker = broker or settings.broker_url
    results = settings.result_url or (broker if is_redis(broker) else settings.tensor_url)
    app = Celery("murmur", broker=broker, backend=results, include=["murmur.tasks.fleet.chain"])
    app.conf.update(
        # JSON only: any client in any language can enqueue, and pickle is never accepted
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # RabbitMQ keeps message priorities only on queues declared with a maximum
        task_queues=[Queue(q, max_priority=None if is_redis(broker) else MAX_PRIORITY) for q in QUEUES.values()],
        task_default_queue=CPU_QUEUE,
        task_routes={f"murmur.{step}": {"queue": queue} for step, queue in QUEUE_OF_STEP.items()},
        # a message is acknowledged after its work is stored; a dead worker's work is re-driven
        # from its lapsed leases (fleet.reconciler), well before the visibility timeout
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds only what its threads are working on
        broker_transport_options={
            "visibility_timeout": timeout,
            # look for abandoned messages often enough that a short timeout means a short wait
            "unacked_restore_interval": max(1, min(10, timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # redis:// only: rediss:// keeps kombu's own transport, whose TLS checks key on the scheme
        broker_transport=TRANSPORT if broker.startswith("redis://") else None,
        task_ignore_result=True,  # only murmur.transcribe keeps a result: the job id
        result_expires=24 * 3600,
        worker_send_task_events=True,  # Flower sees tasks
        task_send_sent_event=True,
    )
    return app


app = create_app()
