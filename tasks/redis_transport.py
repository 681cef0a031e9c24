"""kombu's Redis transport, tolerant of a Redis that went away while messages were in hand.

When the broker connection drops, kombu closes the channel and tries to put the worker's
delivered-but-unacknowledged messages back on their queues through that same, already
released connection. It raises, Celery calls it an unrecoverable error, and the worker's
shutdown then hangs with its threads idle. In murmur the rows in Postgres are the record:
whatever those messages carried is re-driven from lapsed leases (tasks.reconciler), and every
task is safe to run twice. So a hand-back or an acknowledgement that cannot reach the broker
is logged and dropped, and the consumer reconnects as it does after any other broker loss.
"""

from __future__ import annotations

import logging

from kombu.transport import redis

log = logging.getLogger("murmur")


class QoS(redis.QoS):
    def restore_unacked_once(self, stderr=None) -> None:
        in_hand = len(self._delivered) - len(self._dirty)
        try:
            super().restore_unacked_once(stderr)
        except Exception as exc:  # noqa: BLE001 - the connection is gone; the rows keep the work
            log.warning("could not hand %d message(s) back to the broker (%r): their work is re-driven from "
                        "Postgres once its leases lapse", in_hand, exc)

    def ack(self, delivery_tag) -> None:
        try:
            super().ack(delivery_tag)
        except Exception as exc:  # noqa: BLE001
            if not self.channel.closed:
                raise
            # the message belongs to a connection that is gone: with it went any copy in a
            # restarted Redis; one that survived comes back after the visibility timeout and
            # finds its work done
            log.info("message %s finished after its broker connection closed (%r)", delivery_tag, exc)
            self._quick_ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except Exception as exc:  # noqa: BLE001
            if not self.channel.closed:
                raise
            log.info("message %s rejected after its broker connection closed (%r)", delivery_tag, exc)
            self._quick_ack(delivery_tag)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
