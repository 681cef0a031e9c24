"""The embedded runner end to end: real audio, real weights, a real SQLite file."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from murmur.db import queries
from murmur.db.models import ChunkRow, Job
from murmur.db.session import sessions, upgrade
from murmur.tasks import stages
from murmur.tasks.context import Context
from murmur.tasks.embedded import runner as embedded
from murmur.tasks.outputs.formats import render
from murmur.workers.options import JobOptions
from murmur.workers.errors import MurmurError
from tests.conftest import DATA, word_error_rate, words


pytestmark = pytest.mark.weights


@pytest.fixture()
def ctx(sqlite_url):
    upgrade(sqlite_url)
    return Context(db=sessions(sqlite_url), device="cpu", compute_type="int8", threads=2)


def _run(ctx, name, **options):
    return embedded.run(ctx, str(DATA / name), JobOptions(**options))


def test_english_clip_with_detected_language(ctx, base_model):
    result = _run(ctx, "jfk_inaugural_1961.flac")
    reference = (DATA / "jfk_inaugural_1961.txt").read_text()
    assert result.language == "en" and result.language_probability > 0.8
    assert word_error_rate(reference, result.text) <= 0.1
    assert {"fellow", "americans", "country"} <= set(words(result.text))
    # Kennedy stops at 10.18 s (where the clip's energy falls to its noise floor); the VAD let go 0.3 s later
    assert abs(result.segments[-1].end - 10.18) <= 0.15, result.segments[-1]
    for segment in result.segments:
        assert 0.0 <= segment.start < segment.end <= 11.0
        assert segment.language == "en"
        assert segment.compression_ratio < 2.4
    job = queries.get_job(ctx.db, result.job_id)
    assert job.status == "done" and job.n_chunks == job.chunks_done == 1
    assert len(queries.get_segments(ctx.db, result.job_id)) == len(result.segments)


def test_segments_are_sentences_in_source_time(ctx, base_model):
    result = _run(ctx, "en_de_codeswitch.flac", language="en")
    assert len(result.segments) >= 8  # sentence-like, not one per 30 s chunk
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)
    truth = json.loads((DATA / "en_de_codeswitch.json").read_text())["segments"]
    first_english = next(s for s in result.segments if "thank" in words(s.text))
    assert abs(first_english.start - truth[0]["start"]) < 1.0
    assert result.segments[-1].end <= truth[-1]["end"] + 1.0


def test_fixed_seed_gives_byte_identical_output(ctx, base_model):
    a = _run(ctx, "mls_spanish_13697_11991_000000.opus", word_timestamps=True)
    b = _run(ctx, "mls_spanish_13697_11991_000000.opus", word_timestamps=True)
    assert a.segments and a.job_id != b.job_id
    strip = lambda t: json.dumps({**t.to_json(), "job_id": None}, sort_keys=True)  # noqa: E731
    assert a.segments[0].words and a.to_json()["segments"][0]["words"][0].keys() == {"start", "end", "text", "probability"}
    assert strip(a) == strip(b)


def test_quiet_room_gives_an_empty_transcript(ctx, base_model):
    result = _run(ctx, "nst_quiet_room_4s.wav")
    assert result.segments == [] and result.text == ""
    assert result.language is None
    assert queries.get_job(ctx.db, result.job_id).status == "done"
    assert render(result, "srt") == ""


def test_spanish_is_detected_and_translation_is_english(ctx, base_model):
    spanish = _run(ctx, "mls_spanish_13697_11991_000000.opus")
    assert spanish.language == "es"
    assert {"wentworth", "carlos"} & set(words(spanish.text))
    english = _run(ctx, "mls_spanish_13697_11991_000000.opus", task="translate")
    vocabulary = set(words(english.text))
    assert {"the", "and", "of"} & vocabulary
    assert not {"el", "la", "que", "las"} & vocabulary


def test_multilingual_reports_each_chunk_in_its_own_language(ctx, base_model):
    truth = json.loads((DATA / "en_de_codeswitch.json").read_text())["segments"]
    result = _run(ctx, "en_de_codeswitch.flac", multilingual=True)
    german = [s for s in result.segments if s.language == "de"]
    english = [s for s in result.segments if s.language == "en"]
    assert len(german) >= 5 and len(english) >= 5
    assert {"und", "die", "wir"} & set(words(" ".join(s.text for s in german)))
    for segment in german:  # each German segment lies where a German sentence was spoken
        middle = (segment.start + segment.end) / 2
        spoken = min(truth, key=lambda t: abs((t["start"] + t["end"]) / 2 - middle))
        assert spoken["lang"] == "de"
    translated = _run(ctx, "en_de_codeswitch.flac", multilingual=True, output_language="en")
    assert {s.language for s in translated.segments} == {"en", "de"}
    assert not {"und", "wir", "die", "das"} & set(words(translated.text))


def test_english_only_model_skips_detection(ctx, tiny_en_model):
    result = _run(ctx, "jfk_inaugural_1961.flac", model="tiny.en")
    assert result.language == "en"
    assert result.language_probability is None  # a vote would have recorded its probability
    assert "country" in words(result.text)


def test_a_given_language_skips_detection(ctx, base_model):
    result = _run(ctx, "jfk_inaugural_1961.flac", language="en")
    assert result.language == "en" and result.language_probability is None
    assert "country" in words(result.text)


def test_failures_are_recorded_on_the_job(ctx, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio at all, just text pretending to be a wav file")
    with pytest.raises(MurmurError, match="not a readable audio file") as caught:
        embedded.run(ctx, str(bogus), JobOptions())
    job = queries.get_job(ctx.db, caught.value.job_id)
    assert job.status == "failed" and "not a readable audio file" in job.error
    with pytest.raises(MurmurError, match="unknown model") as caught:
        embedded.run(ctx, str(DATA / "jfk_inaugural_1961.flac"), JobOptions(model="nonexistent-size"))
    assert queries.get_job(ctx.db, caught.value.job_id).status == "failed"
    # the process goes on: the next job is untouched and succeeds
    assert "country" in words(_run(ctx, "jfk_inaugural_1961.flac", model="tiny.en").text)


def test_segment_ends_land_on_speech_not_in_the_pause_after_it(ctx, base_model, tmp_path):
    """A minute of en_5min, twelve sentences with pauses of 0.4–2.0 s whose times are known."""
    import wave

    import numpy as np

    from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio

    truth = [s for s in json.loads((DATA / "en_5min.json").read_text())["segments"] if s["end"] < 62.0]
    audio = decode_audio(DATA / "en_5min.flac")[: int(62.3 * SAMPLE_RATE)]
    clip = tmp_path / "en_minute.wav"
    with wave.open(str(clip), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    result = embedded.run(ctx, str(clip), JobOptions(language="en", word_timestamps=True))
    assert len(result.segments) == len(truth) == 12
    pauses = [(a["end"] + 0.3, b["start"] - 0.3) for a, b in zip(truth, truth[1:]) if b["start"] - a["end"] > 0.6]
    assert len(pauses) == 8  # the gaps longer than the 0.3 s of slack on each side
    for segment in result.segments:
        for pause in pauses:  # 0.3 s of slack either side of each reference pause
            assert not pause[0] < segment.end < pause[1], (segment.text, segment.end, pause)
            assert not pause[0] < segment.start < pause[1], (segment.text, segment.start, pause)
        for word in segment.words:
            assert not any(word.start < a and word.end > b for a, b in pauses), (word, segment.text)  # no word spans a pause
    for reference, segment in zip(truth, result.segments):
        assert abs(segment.start - reference["start"]) <= 0.3 and abs(segment.end - reference["end"]) <= 0.3, (segment, reference)
    cues = render(result, "srt").split("\n\n")
    assert len(cues) == 12


def _planned(ctx, name: str, **options) -> tuple[str, list]:
    job_id = queries.create_job(ctx.db, str(DATA / name), JobOptions(**options).to_json())
    refs = stages.prepare(ctx, job_id)
    stages.detect_language(ctx, job_id, refs)
    return job_id, refs


def test_a_job_that_breaks_its_batch_fails_alone(ctx, base_model):
    """One batch, three jobs: one whose chunk row is damaged (its decode raises), one whose stored
    options no longer parse; only they fail, each with its own reason, and the third is decoded."""
    good, good_refs = _planned(ctx, "jfk_inaugural_1961.flac", language="en")
    damaged, damaged_refs = _planned(ctx, "stereo_two_speakers.wav", language="en")
    garbled, garbled_refs = _planned(ctx, "stereo_two_speakers.wav", language="en")
    with ctx.db.begin() as s:
        s.execute(update(ChunkRow).where(ChunkRow.job_id == damaged).values(speech=[[0.0, "late"]]))
        s.execute(update(Job).where(Job.id == garbled).values(options={"model": "base", "seed": [1]}))
    items = [(damaged, damaged_refs[0]), (good, good_refs[0]), (garbled, garbled_refs[0])]
    assert stages.decode_chunks(ctx, items) == [good]  # the one job this batch completed
    assert stages.assemble(ctx, good)
    assert "country" in words(queries.get_transcript(ctx.db, good).text)
    for job_id, reason, failure in [(damaged, "internal error: ", "internal"), (garbled, "invalid seed [1]", "input")]:
        row = queries.get_job(ctx.db, job_id)
        assert row.status == "failed" and reason in row.error and row.failure == failure, (row.error, row.failure)


def _count_encoded_rows(monkeypatch) -> list[int]:
    """The rows each encoder pass takes from now on (decode's, the stages' and the embedded runner's own), in order."""
    from murmur.workers.gpu import decode

    rows: list[int] = []
    real_encode = decode.encode

    def counting_encode(model, features, **kwargs):
        rows.append(len(features))
        return real_encode(model, features, **kwargs)

    for module in (decode, stages, embedded):
        monkeypatch.setattr(module, "encode", counting_encode)
    real_pieces = decode.encoded_pieces

    def counting_pieces(model, features, **kwargs):  # a language vote's passes, a window at a time on CPU
        for piece, output in real_pieces(model, features, **kwargs):
            rows.append(piece.stop - piece.start)
            yield piece, output

    monkeypatch.setattr(stages, "encoded_pieces", counting_pieces)
    return rows


def test_detection_reuses_the_encoder_output_of_decode(ctx, base_model, monkeypatch):
    """The language is voted from the first batches decode encodes anyway: every chunk goes
    through the encoder once, and the transcript is the one the given language gives."""
    encoded_rows = _count_encoded_rows(monkeypatch)
    detected = _run(ctx, "librivox_grimmelshausen_simplicissimus_title.mp3")
    job = queries.get_job(ctx.db, detected.job_id)
    assert job.n_chunks >= 2 and sum(encoded_rows) == job.n_chunks  # no chunk encoded twice
    assert detected.language == "de" and detected.language_probability > 0.8
    assert job.detect_seconds > 0
    given = _run(ctx, "librivox_grimmelshausen_simplicissimus_title.mp3", language="de")
    assert [s.text for s in detected.segments] == [s.text for s in given.segments]


def test_a_multilingual_vote_before_decode_costs_no_second_pass(ctx, base_model, monkeypatch):
    """Multilingual mode votes before decoding (on the spoken languages): the voters' decode reuses their
    encoder output, so every chunk goes through the encoder once, and German is still read as German."""
    encoded_rows = _count_encoded_rows(monkeypatch)
    result = _run(ctx, "en_de_codeswitch.flac", multilingual=True)
    job = queries.get_job(ctx.db, result.job_id)
    assert job.n_chunks > 8 and sum(encoded_rows) == job.n_chunks  # 8 voters, none encoded twice
    assert {s.language for s in result.segments} == {"en", "de"}


def test_voters_held_by_a_worker_are_decoded_beside_other_chunks_without_a_second_pass(ctx, base_model, monkeypatch):
    """A GPU worker's batches mix a job's voters, whose encoder output detection holds, with chunks not
    encoded yet (as its batcher does): only those are encoded, and the text is that of the given language."""
    job_id = queries.create_job(ctx.db, str(DATA / "en_5min.flac"), JobOptions().to_json())
    refs = stages.prepare(ctx, job_id)
    voters = stages.detect_language(ctx, job_id, refs)
    # on CPU the voters are encoded one at a time: three English ones of five settle the vote
    assert queries.get_job(ctx.db, job_id).language == "en" and len(voters.refs) == 3
    encoded_rows = _count_encoded_rows(monkeypatch)  # decode's passes only, from here on
    rest = [r for r in refs if r not in voters.refs]
    assert len(rest) >= 4
    for batch in (voters.refs[:2] + rest[:2], voters.refs[2:] + rest[2:]):  # each batch: some voters, some not
        stages.decode_chunks(ctx, [(job_id, r) for r in batch], encoded=[voters])
    assert sum(encoded_rows) == len(rest)  # the voters were not encoded again
    assert stages.assemble(ctx, job_id)
    decoded = queries.get_transcript(ctx.db, job_id)
    given = _run(ctx, "en_5min.flac", language="en")
    assert [s.text for s in decoded.segments] == [s.text for s in given.segments]


def test_held_encoder_output_of_every_type_joins_in_host_memory():
    """A GPU worker may hold voters' output as float16 or bfloat16 (numpy has no bfloat16): each joins
    with rows encoded later, its values kept, and bfloat16 comes back as float32 for CTranslate2 to cast."""
    import ctranslate2
    import numpy as np

    from murmur.workers.gpu.decode import host_array, joined

    rows = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 8  # exact in every type
    for dtype in (ctranslate2.DataType.float32, ctranslate2.DataType.float16, ctranslate2.DataType.bfloat16):
        held = ctranslate2.StorageView.from_array(rows).to(dtype)
        array = host_array(held)
        assert array.dtype in (np.float32, np.float16) and np.array_equal(array.astype(np.float32), rows), dtype
        both = np.asarray(joined([held, rows[:1].astype(array.dtype)]))
        assert both.shape == (3, 3, 4) and np.array_equal(both[2].astype(np.float32), rows[0])


def _fails_without_hanging(ctx, job_id: str, error: str) -> bool:
    """Run the job in a thread: True when it raised `error` within 300 s, False when a decoder still waits."""
    import threading

    raised = []

    def run():
        with pytest.raises(RuntimeError, match=error):
            embedded.run_job(ctx, job_id)
        raised.append(True)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(300)
    return not worker.is_alive() and bool(raised)


def test_a_voting_batch_that_fails_fails_the_job_without_stranding_the_other(ctx, base_model, monkeypatch):
    """Two decoders vote on the language; when one raises before casting its vote, the other
    does not wait for it forever: the job fails with that reason, and the next job runs."""

    real = embedded.top_languages
    calls = []

    def second_call_raises(model, encoded, among=()):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("encoder fault")
        return real(model, encoded, among)

    monkeypatch.setattr(embedded, "top_languages", second_call_raises)
    job_id = queries.create_job(ctx.db, str(DATA / "librivox_grimmelshausen_simplicissimus_title.mp3"),
                                JobOptions(batch_size=4).to_json())
    assert _fails_without_hanging(ctx, job_id, "encoder fault"), "a decoder waited for a vote that never came"
    assert len(calls) == 2
    job = queries.get_job(ctx.db, job_id)
    assert job.status == "failed" and "encoder fault" in job.error, job.error
    monkeypatch.setattr(embedded, "top_languages", real)
    assert _run(ctx, "librivox_grimmelshausen_simplicissimus_title.mp3").language == "de"


def test_the_ballot_counts_whole_rounds_as_soon_as_they_settle_the_language(ctx):
    """Two first batches hold 3 and 2 voters. After two rounds four windows agree: the fifth could not
    outvote them, so the language is recorded then, whichever batch is quicker to cast its next window;
    a window of a round not yet complete is not counted, so the probability does not depend on the race."""
    job_id = queries.create_job(ctx.db, str(DATA / "en_5min.flac"), JobOptions().to_json())
    ballot = embedded._Ballot(ctx, job_id, [3, 2])
    first, second = ballot.seat(0), ballot.seat(1)
    first.cast([("en", 0.9)])
    first.cast([("en", 0.7)])
    first.cast([("en", 0.5)])  # the quicker batch's third voter: its round is not complete, and it is not counted
    assert not ballot.counted_by(1, timeout=0)
    second.cast([("en", 0.6)])
    assert not ballot.counted_by(1, timeout=0)  # round 1 is two of five: the other three could still outvote them
    assert queries.get_job(ctx.db, job_id).language is None
    second.cast([("en", 0.8)])
    assert ballot.counted_by(2, timeout=0)
    second.wait()  # returns at once
    job = queries.get_job(ctx.db, job_id)
    assert job.language == "en" and job.language_probability == pytest.approx(0.75)  # the mean of the four counted

    alone = embedded._Ballot(ctx, job_id, [3])  # one decoder (a GPU's): nobody waits, every voter counts
    alone.seat(0).cast([("en", 0.9), ("en", 0.8), ("en", 0.7)])
    assert queries.get_job(ctx.db, job_id).language_probability == pytest.approx(0.8)  # not 0.85, the first two


def test_a_chunk_lent_to_another_decoder_that_fails_fails_the_job_without_stranding_it(ctx, base_model, monkeypatch):
    """Nine chunks on two decoders: one decoder encodes the other's odd chunk first. Should that raise,
    the borrower does not wait for it forever: the job fails with the reason."""

    real = embedded._encode_batch
    lent = []

    def lent_chunk_raises(ctx_, job_id, refs, picks, *args, **kwargs):
        if len(refs) == 1 and not picks:
            lent.append(refs[0])
            raise RuntimeError("lent chunk fault")
        return real(ctx_, job_id, refs, picks, *args, **kwargs)

    monkeypatch.setattr(embedded, "_encode_batch", lent_chunk_raises)
    job_id = queries.create_job(ctx.db, str(DATA / "en_5min.flac"), JobOptions(batch_size=16).to_json())
    assert _fails_without_hanging(ctx, job_id, "lent chunk fault"), "a decoder waited for a chunk that never came"
    assert len(lent) == 1
    job = queries.get_job(ctx.db, job_id)
    assert job.status == "failed" and "lent chunk fault" in job.error, job.error


def test_a_job_of_several_batches_loads_one_model_in_one_shape(ctx, base_model):
    """Two decoders side by side share one model object (two replicas); nothing loads
    the one-replica shape only to read n_mels or to check the model is multilingual."""
    from murmur.workers.gpu.model import load_model

    load_model.cache_clear()
    for language in (None, "de"):  # detected from decode's batches, and given
        result = _run(ctx, "librivox_grimmelshausen_simplicissimus_title.mp3", batch_size=1, language=language)
        assert queries.get_job(ctx.db, result.job_id).n_chunks >= 2 and result.language == "de"
    assert load_model.cache_info().currsize == 1
    assert load_model.cache_info().misses == 1


@pytest.mark.weights
def test_the_transcript_is_released_in_order_stretch_by_stretch_before_the_job_ends(ctx, base_model):
    released: list[list] = []
    # a batch of one chunk per decoder: four rounds of batches, so the transcript comes in several stretches
    job_id = embedded.jobs.create(ctx.db, embedded.jobs.Submission(str(DATA / "en_de_codeswitch.flac"), JobOptions(batch_size=2)))
    transcript = embedded.run_job(ctx, job_id, on_release=released.append)
    assert len(released) >= 2  # stretch by stretch, not all at the end
    stretches = [[(s.chunk_idx, s.idx, s.start, s.text) for s in stretch] for stretch in released]
    assert [item for stretch in stretches for item in stretch] == [(s.chunk_idx, s.idx, s.start, s.text)
                                                                    for s in transcript.segments]
    chunks = [[chunk for chunk, *_ in stretch] for stretch in stretches if stretch]
    assert all(a[-1] < b[0] for a, b in zip(chunks, chunks[1:]))  # each stretch after the one before


def test_the_batch_with_the_first_chunk_decodes_it_alone_first():
    """So the first lines come after one window's decode on CPU; other batches, and a GPU's, stay whole.
    The embedded runner and the GPU-queue worker split their batches by this one rule."""
    from murmur.tasks.stages import first_chunks_first
    from murmur.tasks.tensors.store import TensorRef, feature_key

    def refs(*chunks: int, job: str = "j") -> list:
        return [TensorRef(feature_key(job, c), (80, 3000), "float16") for c in chunks]

    def split(items: list, device: str = "cpu") -> list:
        return first_chunks_first(items, lambda ref: ref.chunk_idx, device)

    assert split(refs(0, 8, 17)) == [refs(0), refs(8, 17)]
    assert split(refs(4, 13, 0)) == [refs(0), refs(4, 13)]
    assert split(refs(4, 13, 1)) == [refs(4, 13, 1)]
    assert split(refs(0)) == [refs(0)]
    assert split(refs(0, 8, 17), "cuda") == [refs(0, 8, 17)]
    two_jobs = refs(0, 3) + refs(0, 5, job="k")  # every job's first chunk leads
    assert split(two_jobs) == [[two_jobs[0], two_jobs[2]], [two_jobs[1], two_jobs[3]]]


def test_lines_printed_as_released_are_the_rendering_of_the_whole_transcript():
    """However the transcript is cut into stretches, the lines joined are `render`'s text, byte for byte."""
    from murmur.tasks.outputs.formats import Lines
    from murmur.workers.transcript import Segment, Transcript

    segments = [Segment(i // 3, i % 3, i * 2.0, i * 2.0 + 2.5, f"Line {i} <b>&", "en", -0.1, 0.0, 1.0,
                        speaker=None if i < 4 else f"S{1 + i % 2}") for i in range(8)]
    for fmt in ("txt", "srt", "vtt"):
        for shown in (segments, segments[:1], []):
            for cut in (1, 3, 8):
                lines = Lines(fmt)
                printed = [line for k in range(0, len(shown), cut) for line in lines.feed(shown[k:k + cut])]
                printed += lines.finish()
                assert "\n".join(printed) == render(Transcript("j", "en", 1.0, 20.0, shown), fmt), (fmt, len(shown), cut)


@pytest.mark.weights
def test_a_stream_that_ends_in_a_failed_job_raises_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("MURMUR_DATABASE_URL", raising=False)
    embedded.get_settings.cache_clear()
    (tmp_path / "notes.wav").write_bytes(b"this is not audio" * 50)
    try:
        with pytest.raises(MurmurError, match="not a readable audio file"):
            list(embedded.transcribe_stream(str(tmp_path / "notes.wav")))
        streamed = list(embedded.transcribe_stream(str(DATA / "jfk_inaugural_1961.flac"), language="en"))
        assert {"fellow", "americans", "country"} <= set(words(" ".join(s.text for s in streamed)))
    finally:
        embedded.get_settings.cache_clear()
