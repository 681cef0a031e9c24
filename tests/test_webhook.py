"""Webhooks against real HTTP servers on this machine: fenced addresses, no redirects, a deadline, a signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from murmur.settings import Settings
from murmur.tasks.outputs.webhook import check_callback_url, post, redact
from murmur.workers.errors import MurmurError

SECRET = "s3cret"


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), body))
        if self.path.startswith("/redirect"):
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path.startswith("/drip"):
            self.send_response(200)
            self.send_header("Content-Length", "20")
            self.end_headers()
            for _ in range(20):  # one byte a second: per-read timeouts alone would never fire
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(1)
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    httpd.daemon_threads = True
    httpd.received = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


BODY = json.dumps({"job_id": "abc", "status": "done"}).encode()


def test_loopback_private_and_metadata_addresses_are_refused_unless_allowed(server):
    for url in (_url(server, "/hook"), "http://localhost:9/", "http://10.1.2.3/", "http://169.254.169.254/latest/",
                "http://[::1]:9/", "http://[::ffff:127.0.0.1]:9/", "http://0.0.0.0:9/", "http://100.64.0.1/",
                # IPv4 inside IPv6, which a translating host or relay turns back into the address inside
                "http://[::127.0.0.1]:9/", "http://[64:ff9b::7f00:1]:9/", "http://[64:ff9b::a9fe:a9fe]/",
                "http://[64:ff9b:1::a00:1]/", "http://[2002:7f00:1::1]:9/", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/"):
        outcome = post(url, BODY, Settings())
        assert outcome.state == "refused" and "not a public address" in outcome.detail, url
    assert server.received == []  # nothing reached the server
    allowed = post(_url(server, "/hook"), BODY, Settings(callback_allow=("127.0.0.0/8",)))
    assert allowed.state == "sent"
    by_name = post(f"http://localhost:{server.server_port}/hook", BODY, Settings(callback_allow=("localhost",)))
    assert by_name.state == "sent" and len(server.received) == 2


def test_an_allowed_hook_gets_one_signed_post_that_verifies(server):
    outcome = post(_url(server, "/hook?token=abc"), BODY, Settings(callback_allow=("127.0.0.1",), callback_secret=SECRET))
    assert outcome.state == "sent"
    [(path, headers, body)] = server.received
    assert path == "/hook?token=abc" and body == BODY
    expected = hmac.new(SECRET.encode(), headers["X-Murmur-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Murmur-Signature"] == f"sha256={expected}"
    assert abs(int(headers["X-Murmur-Timestamp"]) - time.time()) < 60


def test_redirects_are_not_followed(server):
    outcome = post(_url(server, "/redirect"), BODY, Settings(callback_allow=("127.0.0.1",)))
    assert outcome.state == "refused" and "redirects are not followed" in outcome.detail
    assert [p for p, _, _ in server.received] == ["/redirect"]  # the metadata address was never asked


def test_a_drip_feeding_server_is_cut_off_at_the_deadline(server):
    started = time.monotonic()
    outcome = post(_url(server, "/drip"), BODY, Settings(callback_allow=("127.0.0.1",), callback_deadline=2))
    assert outcome.state == "retry" and "no answer within 2 s" in outcome.detail
    assert time.monotonic() - started < 3.5


def test_callback_urls_are_checked_at_submit_and_logged_without_secrets():
    for bad in ("ftp://example.org/", "example.org/hook", "http://user:pw@example.org/", "http:///nohost", 5,
                "http://example.org:99999/", "https://" + "a" * 3000):
        with pytest.raises(MurmurError, match="callback URL"):
            check_callback_url(bad)
    check_callback_url("https://example.org/hook?token=abc")
    assert redact("https://example.org:8443/hook?token=abc#frag") == "https://example.org:8443/hook"
