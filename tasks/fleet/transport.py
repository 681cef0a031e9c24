"""kombu's Redis transport, tolerant of a Redis that went away, or refused writes, while
messages were in hand.

When the broker connection drops, kombu closes the channel and tries to put the worker's
delivered-but-unacknowledged messages back on their queues through that same, already
released connection. It raises, Celery calls it an unrecoverable error, and the worker's
shutdown then hangs with its threads idle. In murmur the rows in Postgres are the record:
whatever those messages carried is re-driven from lapsed leases (fleet.reconciler), and every
task is safe to run twice. So a hand-back or an acknowledgement that cannot reach the broker
is logged and dropped, and the consumer reconnects as it does after any other broker loss.
The same goes for the bookkeeping writes of a Redis that is full under `noeviction`: left to
raise, each one is an "Unrecoverable error" and a hung worker.
"""

from __future__ import annotations

import logging
from functools import partial

from kombu.transport import redis, virtual
from redis.exceptions import ResponseError

log = logging.getLogger("murmur")


class QoS(redis.QoS):
    def append(self, message, delivery_tag) -> None:
        try:
            super().append(message, delivery_tag)
        except ResponseError as exc:  # full: the message is worked on all the same, unrecorded in Redis
            log.warning("message %s received, but Redis could not record it as delivered (%r)", delivery_tag, exc)
            virtual.QoS.append(self, message, delivery_tag)

    def restore_unacked_once(self, stderr=None) -> None:
        in_hand = len(self._delivered) - len(self._dirty)
        try:
            super().restore_unacked_once(stderr)
        except Exception as exc:  # noqa: BLE001 - the connection is gone; the rows keep the work
            log.warning("could not hand %d message(s) back to the broker (%r): their work is re-driven from "
                        "Postgres once its leases lapse", in_hand, exc)

    def ack(self, delivery_tag) -> None:
        self._settle(super().ack, delivery_tag, "finished")

    def reject(self, delivery_tag, requeue=False) -> None:
        self._settle(partial(super().reject, requeue=requeue), delivery_tag, "rejected")

    def _settle(self, settle, delivery_tag, what: str) -> None:
        try:
            settle(delivery_tag)
        except Exception as exc:  # noqa: BLE001
            if not (self.channel.closed or isinstance(exc, ResponseError)):
                raise
            # The connection is gone (and with it any copy in a restarted Redis), or Redis
            # refused the write (full, under noeviction). A copy that survives comes back after
            # the visibility timeout and finds its work done; raising here would stop the consumer.
            log.info("message %s %s, but the broker could not be told (%r)", delivery_tag, what, exc)
            self._quick_ack(delivery_tag)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
