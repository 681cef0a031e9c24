"""The job's webhook: its URL checked at submit, one signed POST when the job ends.

Someone else's URL is run by our workers, so the POST is fenced in: the host is
resolved and every address must be public (loopback, private, link-local,
the cloud metadata address and other reserved ranges are refused) unless
MURMUR_CALLBACK_ALLOW lists the host or a network holding it; the connection
goes to the address that was checked, so a second DNS answer cannot swap it;
redirects are not followed; the whole request has a deadline however slowly
the server answers; the URL is logged without its query (tokens live there).

The body is signed with the secret of the API key that owns the job (shown once by
`murmur keys create`, so no other tenant can forge its hooks), or, for jobs of no
key, MURMUR_CALLBACK_SECRET: header `X-Murmur-Signature: sha256=<hex>` is
HMAC-SHA256 over `<X-Murmur-Timestamp>.<body>`. `X-Murmur-Delivery` is the same
for every try of one job's hook (the job id): a receiver keeps the ids it has
seen and refuses a timestamp more than TOLERANCE_SECONDS away from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.db.models import CallbackState, Job
from murmur.settings import Settings
from murmur.workers.errors import ForbiddenError, MurmurError

log = logging.getLogger("murmur")
TRIES = 5  # a hook that fails this often (server errors, timeouts) is given up
MAX_URL_LENGTH = 2048
TOLERANCE_SECONDS = 300  # what README tells receivers: a signed timestamp further from now is a replay


def check_callback_url(url) -> None:
    """The URL's shape, at submit; its addresses are checked when it is used."""
    if url is None:
        return
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise MurmurError(f"invalid callback URL {str(url)[:80]!r}: use an http:// or https:// URL")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise MurmurError("invalid callback URL: its port is not a number from 0 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MurmurError(f"invalid callback URL {redact(url)!r}: use an http:// or https:// URL")
    if parts.username or parts.password:
        raise MurmurError("invalid callback URL: credentials in the URL are not accepted")


def redact(url: str) -> str:
    """The URL without query, fragment or credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def payload(job: Job) -> bytes:
    return json.dumps({"job_id": job.id, "status": str(job.status), "error": job.error, "language": job.language,
                       "duration": job.duration, "n_chunks": job.n_chunks}).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    state: str  # "sent", "retry" or "refused"
    detail: str


def post(url: str, body: bytes, settings: Settings, secret: str | None = None, delivery: str | None = None) -> Outcome:
    """One POST to a checked address, with MURMUR_CALLBACK_DEADLINE on the whole exchange; signed with
    `secret` (the key's), else MURMUR_CALLBACK_SECRET, else not at all."""
    check_callback_url(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = _checked_address(parts.hostname, port, settings.callback_allow)
    except MurmurError as exc:
        return Outcome("refused", str(exc))
    except OSError as exc:
        return Outcome("retry", f"cannot resolve {parts.hostname}: {exc}")
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "murmur-webhook", "X-Murmur-Timestamp": timestamp}
    if delivery:
        headers["X-Murmur-Delivery"] = delivery
    secret = secret or settings.callback_secret
    if secret:
        headers["X-Murmur-Signature"] = sign(secret, timestamp, body)
    deadline_seconds = settings.callback_deadline
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _connection(parts.scheme, parts.hostname, address, port, deadline_seconds)
    late = threading.Event()
    watchdog = threading.Timer(deadline_seconds, _cut, (conn, late))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        status = response.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    finally:
        watchdog.cancel()
        conn.close()
    if late.is_set():
        return Outcome("retry", f"no answer within {deadline_seconds:g} s")
    if error:
        return Outcome("retry", error)
    if 200 <= status < 300:
        return Outcome("sent", f"HTTP {status}")
    if 300 <= status < 400:
        return Outcome("refused", f"HTTP {status}: redirects are not followed")
    if status in (408, 429) or status >= 500:
        return Outcome("retry", f"HTTP {status}")
    return Outcome("refused", f"HTTP {status}")


class HookSender:
    """Sends webhooks on a few threads of its own, records the outcome on the job, retries with backoff."""

    def __init__(self, db: sessionmaker[Session], settings: Settings, retry_later, threads: int = 4) -> None:
        self.db, self.settings, self._retry_later = db, settings, retry_later
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="murmur-hook")

    def send(self, job_id: str) -> None:
        self._pool.submit(self._send, job_id)

    def _send(self, job_id: str) -> None:
        try:
            job = queries.get_job(self.db, job_id)
            if job is None or job.callback_state != CallbackState.pending or not job.callback_url:
                return  # sent already, or nothing to send
            if not queries.claim_callback(self.db, job_id, job.callback_attempts):
                return  # another sender took this try
            key = queries.key_by_id(self.db, job.owner) if job.owner else None
            outcome = post(job.callback_url, payload(job), self.settings, key.webhook_secret if key else None, job.id)
            tries = job.callback_attempts + 1
            if outcome.state == "sent":
                queries.update_job(self.db, job_id, callback_state=CallbackState.sent)
                log.info("job %s: callback to %s: %s", job_id, redact(job.callback_url), outcome.detail)
            elif outcome.state == "retry" and tries < TRIES:
                log.warning("job %s: callback to %s failed (%s); try %d of %d", job_id, redact(job.callback_url),
                            outcome.detail, tries, TRIES)
                self._retry_later(job_id, min(60, 2**tries))
            else:
                queries.update_job(self.db, job_id, callback_state=CallbackState.failed)
                log.warning("job %s: callback to %s given up: %s", job_id, redact(job.callback_url), outcome.detail)
        except Exception:  # noqa: BLE001 - the row stays pending; the reconciler sends it again
            log.exception("job %s: callback could not be sent", job_id)


def _checked_address(host: str, port: int, allow: tuple[str, ...]) -> str:
    """The address to connect to; every address the name resolves to must be public or allowed."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise OSError("no address")
    host_allowed = host.lower() in {a.lower() for a in allow}
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if host_allowed or _in_networks(ip, allow):
            continue
        for seen in (ip, *_embedded_ipv4(ip)):
            if not seen.is_global or seen.is_multicast:
                raise ForbiddenError(f"callback host {host} resolves to {ip}, which is not a public address "
                                     "(add it to MURMUR_CALLBACK_ALLOW to allow it)")
    return addresses[0]


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries to a host that translates it: mapped (::ffff:a.b.c.d),
    compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:ab:cd::) and Teredo's client."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
    if ip in _IPV4_COMPATIBLE or any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _in_networks(ip, allow: tuple[str, ...]) -> bool:
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name, not a network
    return False


def _connection(scheme: str, host: str, address: str, port: int, timeout: float) -> http.client.HTTPConnection:
    """A connection to `address` that speaks to `host` (Host header, TLS name)."""

    class Pinned(http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection):
        raw: socket.socket | None = None  # kept for the deadline: http.client drops `sock` once a response is read

        def connect(self) -> None:
            self.sock = self.raw = socket.create_connection((address, port), timeout)
            if scheme == "https":
                self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=host)

    return Pinned(host, port, timeout=timeout)


def _cut(conn: http.client.HTTPConnection, late: threading.Event) -> None:
    """The deadline passed: shut the socket so a server that drips bytes cannot hold the thread."""
    late.set()
    sock = getattr(conn, "raw", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
