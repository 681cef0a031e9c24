"""The fleet's queues: their names, which step goes to which, message priorities, and how many wait.

Importing this module needs no broker and no Celery app: the reconciler, the
exporter and the app itself read their queues from here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from murmur.settings import is_redis
from murmur.tasks.jobs import MAX_PRIORITY

CPU_QUEUE = "murmur.cpu"
GPU_QUEUE = "murmur.gpu"
HOOK_QUEUE = "murmur.hooks"  # webhooks, consumed by the CPU workers
QUEUES = {"cpu": CPU_QUEUE, "gpu": GPU_QUEUE, "hooks": HOOK_QUEUE}

# Each step of the chain (a Celery task, `murmur.<step>`) and the queue it is sent to.
QUEUE_OF_STEP = {
    "transcribe": CPU_QUEUE,
    "prepare": CPU_QUEUE,
    "detect_language": GPU_QUEUE,
    "decode": GPU_QUEUE,
    "assemble": CPU_QUEUE,
    "notify": HOOK_QUEUE,
}


def message_priority(broker_url: str, priority: int | None) -> int:
    """The broker's priority for a job's: kombu's Redis serves 0 first, RabbitMQ serves the highest first."""
    priority = priority or 0
    return priority if is_redis(broker_url) else MAX_PRIORITY - priority


def queue_backlog(url: str, queue: str) -> Callable[[], int]:
    """A function counting the messages waiting in `queue` on the broker at `url` (Redis or
    RabbitMQ); messages already delivered to a worker are not counted."""
    return _redis_backlog(url, queue) if is_redis(url) else _amqp_backlog(url, queue)


def broker_messages(url: str) -> Callable[[], dict[tuple[str, str], int]]:
    """A function counting each queue's messages: (queue, "waiting" or "delivered") → count.

    On Redis, waiting is summed over every priority list and delivered is read
    from the `unacked` hash; RabbitMQ tells only the waiting count.
    """
    if is_redis(url):
        return _redis_messages(url)
    counters = {queue: queue_backlog(url, queue) for queue in QUEUES.values()}
    return lambda: {(queue, "waiting"): count() for queue, count in counters.items()}


def priority_keys(queue: str) -> list[str]:
    """The Redis lists of one queue: kombu keeps one per priority step (`queue`, `queue\\x06\\x163`, …)."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    return [queue] + [f"{queue}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]


def _amqp_backlog(url: str, queue: str) -> Callable[[], int]:
    from kombu import Connection

    lock = threading.Lock()  # an AMQP connection is not shared between threads
    held: list[Connection] = []

    def backlog() -> int:
        with lock:
            if not held:
                held.append(Connection(url, connect_timeout=5))
            try:
                return held[0].default_channel.queue_declare(queue, passive=True).message_count
            except Exception:
                held.pop().release()  # a fresh connection next time
                raise

    return backlog


def _redis_backlog(url: str, queue: str) -> Callable[[], int]:
    """Summed over all of the queue's priority lists."""
    import redis

    client = redis.Redis.from_url(url)
    keys = priority_keys(queue)

    def backlog() -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    return backlog


def _redis_messages(url: str) -> Callable[[], dict[tuple[str, str], int]]:
    import redis

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
