"""`murmur transcribe` as a user runs it: a subprocess, real files, real exit codes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import DATA, run_cli, words

pytestmark = pytest.mark.weights


@pytest.fixture()
def env(tmp_path):
    return {"MURMUR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def _job(env, job_id):
    engine = create_engine(env["MURMUR_DATABASE_URL"])
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, error FROM jobs WHERE id = :id"), {"id": job_id}).one()


def test_json_output_is_the_documented_object(env):
    done = run_cli("transcribe", str(DATA / "jfk_inaugural_1961.flac"), "--model", "tiny.en", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"job_id", "language", "language_probability", "duration", "segments"}
    assert result["language"] == "en" and abs(result["duration"] - 11.0) < 0.05
    segment = result["segments"][0]
    assert {"start", "end", "text", "language"} <= set(segment)
    assert _job(env, result["job_id"]).status == "done"


@pytest.mark.parametrize("fmt, marker", [("srt", " --> "), ("vtt", "WEBVTT"), ("txt", "country")])
def test_subtitle_and_text_formats(env, fmt, marker):
    done = run_cli("transcribe", str(DATA / "jfk_inaugural_1961.flac"), "--model", "tiny.en", "--format", fmt, env=env)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "country" in words(done.stdout)
    if fmt == "srt":
        assert done.stdout.startswith("1\n00:00:0")


def test_bad_input_is_one_line_and_a_failed_job(env, tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "fake.flac").write_bytes(b"\x00\x01garbage" * 1000)
    mp3 = (DATA / "librivox_grimmelshausen_simplicissimus_title.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(mp3[:100_000])
    cases = [
        ([str(tmp_path / "missing.wav")], "no such file"),
        ([str(tmp_path / "empty.mp3")], "file is empty"),
        ([str(tmp_path / "fake.flac")], "not a readable audio file"),
        ([str(tmp_path / "cut.mp3")], "truncated"),
        ([str(DATA / "jfk_inaugural_1961.flac"), "--model", "whisper-gigantic"], "unknown model"),
    ]
    for args, message in cases:
        done = run_cli("transcribe", *args, env=env)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
        job_id = lines[0].rsplit("(job ", 1)[1].rstrip(")")
        status, error = _job(env, job_id)
        assert status == "failed" and message in error


def test_many_files_in_one_command_each_get_their_own_transcript(env, tmp_path):
    """Short clips of different voices and languages in one process, their chunks batched and packed
    together: each output is named after its input and holds its own words and no other clip's; a bad
    file is told on stderr, the others go on, and the exit status counts the failures."""
    clips = {"jfk_inaugural_1961.flac": ("fellow", "americans", "country"), "pocketsphinx_goforward.wav": ("forward", "meters"),
             "mfa_thoughts.flac": ("thousand", "thoughts"), "librispeech_61-70968-0000.flac": ("wizard", "curtain"),
             "librivox_sense_sensibility_0890.wav": ("selfish", "disposed"),
             "mls_spanish_13697_11991_000000.opus": ("sorpresa", "disgusto"), "nst_quiet_room_4s.wav": ()}
    folder = tmp_path / "in"
    folder.mkdir()
    for name in clips:
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "notes.txt").write_text("not a recording: a folder is read for its audio and video files")
    (tmp_path / "broken.wav").write_bytes(b"RIFF this is not audio" * 50)
    out = tmp_path / "out"
    done = run_cli("transcribe", str(folder), str(tmp_path / "broken.wav"), "--output-dir", str(out), "--format", "all", env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [line for line in done.stderr.strip().splitlines() if "broken.wav" in line]
    assert "not a readable audio file" in done.stderr
    stems = [name.rsplit(".", 1)[0] for name in clips]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.{fmt}" for stem in stems for fmt in ("txt", "srt", "vtt", "json"))
    for name, own in clips.items():
        stem = name.rsplit(".", 1)[0]
        heard = set(words((out / f"{stem}.txt").read_text()))
        assert set(own) <= heard, (name, heard)
        others = {w for other, theirs in clips.items() if other != name for w in theirs}
        assert not heard & others, (name, heard & others)
        result = json.loads((out / f"{stem}.json").read_text())
        assert _job(env, result["job_id"]).status == "done"
        assert result["language"] == ("es" if "spanish" in name else None if not own else "en")
    assert (out / "mfa_thoughts.srt").read_text().startswith("1\n00:00:0")
    # the language given, nothing is encoded before decode: short clips share windows, and still keep their own words
    english = [str(folder / name) for name, own in clips.items() if own and "spanish" not in name]
    packed = run_cli("transcribe", *english, "--language", "en", "--output-dir", str(tmp_path / "packed"), env=env)
    assert packed.returncode == 0, packed.stderr
    for path in english:
        stem = path.rsplit("/", 1)[1].rsplit(".", 1)[0]
        own = set(clips[path.rsplit("/", 1)[1]])
        heard = set(words((tmp_path / "packed" / f"{stem}.txt").read_text()))
        others = {w for other, theirs in clips.items() if not path.endswith(other) for w in theirs}
        assert own <= heard and not heard & others, (stem, heard)
    several = run_cli("transcribe", str(DATA / "mfa_thoughts.flac"), str(DATA / "pocketsphinx_goforward.wav"), env=env)
    assert several.returncode == 1 and "give --output-dir" in several.stderr
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "mfa_thoughts.wav").write_bytes((DATA / "pocketsphinx_goforward.wav").read_bytes())
    clash = run_cli("transcribe", str(DATA / "mfa_thoughts.flac"), str(tmp_path / "again" / "mfa_thoughts.wav"),
                    "--output-dir", str(out), env=env)
    assert clash.returncode == 1 and "would both be written to" in clash.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no recordings here")
    empty = run_cli("transcribe", str(tmp_path / "docs"), "--output-dir", str(out), env=env)
    assert empty.returncode == 1 and "no audio or video files" in empty.stderr


@pytest.mark.parametrize(
    "args",
    [["--beam-size", "0"], ["--task", "summarise"], ["--format", "docx"], ["--batch-size", "many"], ["--multilingual", "--language", "en"],
     ["--language", "english"], ["--beam-size", "64"], ["--model", "/etc"], ["--prompt", "Kennedy " * 300]],
)
def test_invalid_options_are_one_line(env, args):
    done = run_cli("transcribe", str(DATA / "jfk_inaugural_1961.flac"), *args, env=env)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("murmur: error:")


def test_progress_bar_on_a_terminal(env):
    """stderr on a pseudo-terminal gets a chunk progress bar; the transcript stays on stdout."""
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    master, slave = os.openpty()
    shown = bytearray()

    def drain():  # read while the child runs: a closed pty may drop what was not read
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    script = Path(sys.executable).parent / "murmur"
    done = subprocess.run([str(script), "transcribe", str(DATA / "jfk_inaugural_1961.flac"), "--model", "tiny.en"],
                          stdout=subprocess.PIPE, stderr=slave, env={**os.environ, **env}, timeout=600, text=True)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    assert done.returncode == 0
    assert "country" in words(done.stdout)
    assert b"decoding" in shown and b"chunk" in shown


def test_prune_deletes_the_jobs_that_ended_before_the_age_given(env):
    done = run_cli("transcribe", str(DATA / "jfk_inaugural_1961.flac"), "--language", "en", env=env)
    assert done.returncode == 0, done.stderr
    kept = run_cli("prune", "--older-than", "30d", env=env)
    assert kept.returncode == 0 and kept.stdout.strip() == "deleted 0 job(s) that ended more than 2592000 s ago"
    engine = create_engine(env["MURMUR_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = '2020-01-01 00:00:00.000000+00:00'"))
    pruned = run_cli("prune", "--older-than", "30d", env=env)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 1 job(s)"), pruned.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM segments")).scalar() == 0
    bad = run_cli("prune", "--older-than", "a month", env=env)
    assert bad.returncode == 2 and "invalid age 'a month'" in bad.stderr


def test_models_lists_what_loads_here_and_where_it_comes_from(env, tmp_path):
    """The bundled models, then each CTranslate2 directory under MURMUR_MODEL_DIRS (a folder without
    model.bin is no model); the same names GET /v1/models gives."""
    (tmp_path / "models" / "medical-base").mkdir(parents=True)
    (tmp_path / "models" / "medical-base" / "model.bin").write_bytes(b"")
    (tmp_path / "models" / "notes").mkdir()
    listed = run_cli("models", env={**env, "MURMUR_MODEL_DIRS": str(tmp_path / "models")})
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [name for name, _ in rows] == ["base", "tiny.en", "medical-base"]
    assert "bundled" in rows[0][1] and rows[2][1] == str(tmp_path / "models" / "medical-base")
