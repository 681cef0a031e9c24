"""A producer loads no compute: importing the client and running `murmur status` or
`murmur --help` leaves torch, CTranslate2, silero and PyAV unloaded; a transcription
loads the compute it uses and never torch (fresh interpreters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from murmur.db import queries
from tests.conftest import DATA
from murmur.db.session import sessions, upgrade

HEAVY = ("torch", "ctranslate2", "silero_vad", "av", "onnxruntime", "tokenizers", "numpy")


def _loaded_after(code: str, env: dict) -> dict:
    script = f"""
import json, sys
{code}
print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_client_and_status_load_no_compute(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    job_id = queries.create_job(sessions(url), "/data/talk.mp3", {"model": "base"})
    loaded, stdout = _loaded_after(
        f"from murmur import Client\nfrom murmur.cli import main\nmain(['status', {job_id!r}])",
        {"MURMUR_DATABASE_URL": url},
    )
    assert f"{job_id} queued 0/? chunks" in stdout
    assert loaded["heavy"] == []


def test_help_loads_no_compute_and_no_database():
    loaded, stdout = _loaded_after(
        "from murmur.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'sqlalchemy' not in sys.modules and 'celery' not in sys.modules",
        {},
    )
    assert "transcribe" in stdout and loaded["heavy"] == []


@pytest.mark.weights
def test_transcribing_loads_no_torch_and_no_alembic_on_a_migrated_database(tmp_path):
    """A user's run starts on numpy: the VAD reads silero's weights without torch (≈2.5 s and
    ≈180 MB here), and a database already at the newest revision is used without Alembic."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    loaded, stdout = _loaded_after(
        f"from murmur.cli import main\nmain(['transcribe', {str(DATA / 'jfk_inaugural_1961.flac')!r}])\n"
        "assert 'alembic' not in sys.modules",
        {"MURMUR_DATABASE_URL": url},
    )
    assert "ask not what" in stdout
    assert loaded["heavy"] == ["av", "ctranslate2", "numpy", "tokenizers"]
