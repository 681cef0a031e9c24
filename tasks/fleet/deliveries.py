"""Which messages each queue has started: per queue and priority, the newest send time and start time.

A job that nobody holds and that made no progress for the stall timeout either
waits its turn in a busy queue, or its message was lost (a flushed or restarted
Redis, a failed publish, a producer that crashed after its insert). A queue
serves the more urgent first, and each priority first in, first out. So the
job's message, sent at its last step, would have been started before

- a message of the same priority or less urgent that was sent after it, or
- a message less urgent than it that was started after it was sent;

once its queue has started either, the message was lost, and the reconciler
sends it again, however many other messages wait. Every message the fleet sends
carries its send time and its job's priority in headers; workers record what
they start in the tensor store's Redis (one small hash). A flush that loses the
messages loses these times too, to be rebuilt by the next deliveries.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import redis
from kombu.transport.redis import PRIORITY_STEPS

log = logging.getLogger("murmur")
KEY = "murmur:delivered"
SENT, PRIORITY = "murmur_sent", "murmur_priority"  # the headers of every message the fleet sends
# Send and start times come from the workers' clocks, and a step's time from another worker's: clocks
# that agree within a few seconds (README) never make a job look overtaken while its message waits.
CLOCK_SLACK_S = 5.0
_RAISE = """
for i = 1, #ARGV, 2 do
  if tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
"""


def headers(priority: int | None) -> dict:
    """The headers a message sent now carries."""
    return {SENT: time.time(), PRIORITY: priority or 0}


class Deliveries:
    """The newest send and start time of the messages started, per (queue, priority), in Redis."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self._raise = self._redis.register_script(_RAISE)

    def started(self, queue: str | None, priority, sent) -> None:
        """A worker starts a message of `queue` sent at `sent` (its headers; a raw producer's have none)."""
        if queue is None or not isinstance(sent, (int, float)) or not isinstance(priority, int):
            return
        try:
            self._raise(keys=[KEY], args=[f"{queue}:{priority}:sent", repr(float(sent)),
                                          f"{queue}:{priority}:at", repr(time.time())])
        except redis.RedisError as exc:  # a hint only: a stalled job then waits for its queue to empty
            log.debug("could not record a delivery: %s", exc)

    def newest(self) -> dict[tuple[str, int], tuple[float, float]]:
        """(queue, priority) → (the newest send time started there, the newest start)."""
        fields = {key.decode(): float(value) for key, value in self._redis.hgetall(KEY).items()}
        out = {}
        for field, sent in fields.items():
            queue, priority, kind = field.rsplit(":", 2)
            if kind == "sent":
                out[(queue, int(priority))] = (sent, fields.get(f"{queue}:{priority}:at", 0.0))
        return out


def overtaken(newest: dict[tuple[str, int], tuple[float, float]], queue: str, priority: int | None,
              since: datetime) -> bool:
    """Whether `queue` has started a message that a message of `priority` sent at `since` (a job's last
    step) would have come before: one as urgent or less sent after it, or a less urgent one started
    after it. Priorities compare by the lists kombu's Redis keeps (0-2, 3-5, 6-8, 9); finer on RabbitMQ."""
    after = (since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp() + CLOCK_SLACK_S
    mine = priority or 0
    for (q, p), (sent, at) in newest.items():
        if q == queue and ((p >= mine and sent > after) or (_step(p) > _step(mine) and at > after)):
            return True
    return False


def _step(priority: int) -> int:
    """The priority list a message of `priority` waits in on Redis: one serves the lists in order."""
    return max(step for step in PRIORITY_STEPS if step <= priority)
