"""murmur's page in a real browser: Debian's Chromium driven by Playwright, against `murmur serve --embedded`.

Upload a clip, watch its transcript arrive, click a sentence and a word and read
the player's time, download the SRT and compare it with the API's, render
hostile file names and transcripts inertly, and ask for a key where the server
has keys (kept for the tab only, sent as a header). Nothing may be fetched from
anywhere but the server.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, text

from tests.conftest import DATA, run_cli, words
from tests.test_api import Server

pytestmark = [pytest.mark.services, pytest.mark.weights]
CHROMIUM = Path("/usr/bin/chromium")
JFK = DATA / "jfk_inaugural_1961.flac"
HOSTILE_NAME = "<img src=x onerror=alert(1)>.wav"
HOSTILE_TEXT = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> and so on"


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), "make test installs Debian's chromium: run it, or apt-get install chromium"
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), chromium_sandbox=False,
                                             args=["--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@contextmanager
def _site(tmp_path_factory, name: str, keyed: bool):
    """`murmur serve --embedded` on its own SQLite database; with `keyed`, a key made first (then it asks for one)."""
    home = tmp_path_factory.mktemp(name)
    database = f"sqlite:///{home / 'murmur.db'}"
    env = {**os.environ, "XDG_DATA_HOME": str(home), "MURMUR_DEVICE": "cpu", "MURMUR_DATABASE_URL": database}
    key = None
    if keyed:
        assert run_cli("db", "upgrade", env=env).returncode == 0
        created = run_cli("keys", "create", "web", env=env)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
    server = Server(env, home / "serve.log", "--embedded")
    try:
        yield type("Site", (), {"url": server.url, "database": database, "key": key})
    finally:
        server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with _site(tmp_path_factory, "web", keyed=False) as site:
        yield site


@pytest.fixture(scope="module")
def keyed_site(tmp_path_factory):
    with _site(tmp_path_factory, "web-keyed", keyed=True) as site:
        yield site


def _open(browser, site, width: int = 1200):
    """A fresh tab on the page, recording every request that leaves the server and every dialog."""
    context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.elsewhere, page.dialogs = [], []
    page.on("request", lambda r: None if r.url.startswith((site.url + "/", "blob:", "data:")) else page.elsewhere.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return context, page


def _upload(page, name: str, data: bytes, mime: str) -> str:
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.click("#upload-button")
    page.wait_for_url(re.compile(r".*#job/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def _wait_done(page) -> None:
    page.wait_for_function("() => document.getElementById('job-state').textContent.startsWith('done')", timeout=180_000)


def test_upload_watch_read_listen_and_download(browser, site):
    context, page = _open(browser, site)
    answer = page.goto(site.url + "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    job_id = _upload(page, "jfk.flac", JFK.read_bytes(), "audio/flac")
    _wait_done(page)
    with httpx.Client(base_url=site.url, timeout=60) as http:
        segments = http.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
        api_srt = http.get(f"/v1/jobs/{job_id}/transcript", params={"format": "srt"}).text
    expect(page.locator(".segment")).to_have_count(len(segments))
    assert {"fellow", "americans", "country"} <= set(words(page.locator("#transcript").inner_text()))
    # a sentence, then a word of it, seeks the player there
    last = page.locator(".segment").nth(len(segments) - 1)
    last.locator(".time").click()
    page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {segments[-1]['start']}) < 0.6")
    word = page.locator(".word").nth(3)
    start = float(word.get_attribute("data-start"))
    word.click()
    page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {start}) < 0.6")
    # the sentence playing is marked
    page.wait_for_selector(".segment.current[aria-current=true]")
    # the keyboard alone: Enter on a focused sentence seeks too
    page.evaluate("() => { const p = document.getElementById('player'); p.pause(); p.currentTime = 9.5; }")
    page.locator(".segment").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {segments[0]['start']}) < 0.6")
    with page.expect_download() as download:
        page.click(".downloads button[data-format=srt]")
    assert download.value.suggested_filename == "jfk.srt"
    assert Path(download.value.path()).read_text() == api_srt
    # at phone width nothing runs off the side
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    # the list shows the job; deleting it from its page takes it away
    page.goto(site.url + "/#")
    page.wait_for_selector(f"#jobs-table a[href='#job/{job_id}']")
    assert page.locator(f"#jobs-table a[href='#job/{job_id}']").inner_text() == "jfk.flac"
    assert page.elsewhere == [] and page.dialogs == []
    context.close()


def test_names_and_terms_reach_the_decoder(browser, site):
    """The form's "Names and terms" is the job's prompt: the clip's software names come out spelled."""
    context, page = _open(browser, site)
    page.goto(site.url + "/")
    page.select_option("#language", "en")
    page.fill("#prompt", "PostgreSQL, Celery, CTranslate2, nginx, NumPy, Redis, PyTorch.")
    _upload(page, "standup.flac", (DATA / "keyterms_celery_redis.flac").read_bytes(), "audio/flac")
    _wait_done(page)
    assert {"celery", "redis", "ctranslate2", "postgresql"} <= set(words(page.locator("#transcript").inner_text()))
    assert page.dialogs == [] and page.elsewhere == []
    context.close()


def test_hostile_names_and_transcripts_render_as_text(browser, site):
    context, page = _open(browser, site)
    page.goto(site.url + "/")
    job_id = _upload(page, HOSTILE_NAME, (DATA / "pocketsphinx_goforward.wav").read_bytes(), "audio/wav")
    expect(page.locator("#job-title")).to_have_text(HOSTILE_NAME)
    _wait_done(page)
    # the stored transcript is made hostile behind the server's back, as a compromised model's output would be
    engine = create_engine(site.database)
    with engine.begin() as conn:
        changed = conn.execute(text("UPDATE segments SET text = :t, words = NULL WHERE job_id = :j"), {"t": HOSTILE_TEXT, "j": job_id})
    assert changed.rowcount >= 1
    page.reload()
    page.wait_for_selector(".segment")
    assert HOSTILE_TEXT in page.locator("#transcript").inner_text()
    page.goto(site.url + "/#")
    page.wait_for_selector(f"#jobs-table a[href='#job/{job_id}']")
    assert page.locator(f"#jobs-table a[href='#job/{job_id}']").inner_text() == HOSTILE_NAME
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("img, script:not([src])").count() == 0
    assert page.dialogs == [] and page.elsewhere == []
    context.close()


def test_with_keys_the_page_asks_for_one_and_keeps_it_in_the_tab_only(browser, keyed_site):
    context, page = _open(browser, keyed_site)
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))) if "/v1/" in r.url else None)
    page.goto(keyed_site.url + "/")
    page.wait_for_selector("#key-panel:not([hidden])")
    assert page.locator("#upload-panel").is_hidden()
    page.fill("#key-input", "mk-not-a-key")
    page.click("#key-form button")
    page.wait_for_function("() => document.getElementById('key-error').textContent.includes('not accepted')")
    page.fill("#key-input", keyed_site.key)
    page.click("#key-form button")
    page.wait_for_selector("#upload-panel:not([hidden])")
    assert page.evaluate("() => sessionStorage.getItem('murmur.key')") == keyed_site.key
    assert context.cookies() == [] and keyed_site.key not in page.url
    assert sent[-1] == (keyed_site.url + "/v1/jobs?limit=20", f"Bearer {keyed_site.key}")
    assert all(keyed_site.key not in url for url, _ in sent)
    # another tab of another session starts without it
    other, fresh = _open(browser, keyed_site)
    fresh.goto(keyed_site.url + "/")
    fresh.wait_for_selector("#key-panel:not([hidden])")
    other.close()
    context.close()
