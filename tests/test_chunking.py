"""Chunk planning as a pure function: limits, min-cut, merge, time mapping and where stretches of speech end."""

from __future__ import annotations

import numpy as np

from murmur.workers.cpu.chunking import Chunk, chunk_audio, plan_chunks
from murmur.workers.cpu.edges import fit_ends
from murmur.workers.cpu.vad import STEP_S, SpeechSpan
from murmur.workers.window import SAMPLE_RATE


def test_short_spans_merge_greedily_with_padding():
    spans = [SpeechSpan(1.0, 5.0), SpeechSpan(10.0, 20.0), SpeechSpan(30.0, 48.0)]
    chunks = plan_chunks(spans, np.ones(2000), duration=60.0)
    assert [c.spans for c in chunks] == [((0.9, 5.1), (9.9, 20.1)), ((29.9, 48.1),)]
    assert all(c.duration <= 30.0 for c in chunks)


def test_long_span_is_cut_at_its_quietest_window():
    probs = np.full(int(70 / STEP_S), 0.9)
    quiet = int(22.0 / STEP_S)
    probs[quiet] = 0.05
    chunks = plan_chunks([SpeechSpan(0.0, 70.0)], probs, duration=70.0)
    assert abs(chunks[0].end - quiet * STEP_S) < 1e-3
    assert all(c.duration <= 30.0 + 1e-6 for c in chunks)
    assert abs(sum(c.duration for c in chunks) - 70.0) < 1e-3  # nothing lost, nothing doubled


def test_chunk_time_maps_back_to_source_time():
    chunk = Chunk(0, ((2.0, 4.0), (10.0, 13.0)))
    assert chunk.to_source(0.5) == 2.5
    assert chunk.to_source(2.0) == 4.0
    assert chunk.to_source(2.5) == 10.5
    assert chunk.to_source(99.0) == 13.0
    audio = np.arange(20 * 16000, dtype=np.float32)
    samples = chunk_audio(audio, chunk)
    assert samples.size == 5 * 16000
    assert samples[0] == 2 * 16000 and samples[2 * 16000] == 10 * 16000


def test_a_word_across_a_seam_lies_in_the_span_it_overlaps_most():
    chunk = Chunk(0, ((2.0, 4.0), (10.0, 13.0)))  # the seam is at chunk time 2.0
    assert chunk.word_to_source(1.9, 2.6) == (10.0, 10.6)  # mostly after the seam: not from 3.9, six seconds early
    assert chunk.word_to_source(1.4, 2.1) == (3.4, 4.0)  # mostly before it
    assert chunk.word_to_source(0.5, 1.0) == (2.5, 3.0)  # inside one span: as point by point
    assert chunk.word_to_source(2.5, 2.5) == (10.5, 10.5)  # no length: where it is


def test_no_speech_no_chunks():
    assert plan_chunks([], np.zeros(100), duration=3.0) == []


def test_speech_inside_each_chunk_is_kept_with_it():
    spans = [SpeechSpan(1.0, 5.0), SpeechSpan(10.0, 38.0)]  # 4.2 s + 28.2 s: two chunks
    fine = [SpeechSpan(1.0, 2.5), SpeechSpan(2.8, 5.0), SpeechSpan(10.0, 38.0)]
    chunks = plan_chunks(spans, np.ones(2000), duration=60.0, speech=fine)
    assert [c.speech for c in chunks] == [((1.0, 2.5), (2.8, 5.0)), ((10.0, 38.0),)]
    assert plan_chunks(spans, np.ones(2000), duration=60.0)[0].speech == ()


def test_snap_trims_a_word_to_the_speech_it_starts_in():
    chunk = Chunk(0, ((0.9, 5.1), (9.9, 20.1)), speech=((1.0, 2.5), (2.8, 5.0), (10.0, 20.0)))
    assert chunk.snap(1.2, 2.0) == (1.2, 2.0)  # inside speech: untouched
    assert chunk.snap(2.0, 10.3) == (2.0, 2.5)  # the last word before a pause does not cover it
    assert chunk.snap(4.5, 10.4) == (4.5, 5.0)  # nor the pause the chunk cut out
    assert chunk.snap(9.95, 10.5) == (10.0, 10.5)  # a start in the pause moves to the speech nearest it
    assert chunk.snap(5.05, 5.1) == (5.0, 5.0)
    assert Chunk(0, ((0.0, 3.0),)).snap(0.5, 2.9) == (0.5, 2.9)  # no speech known: times as aligned


def test_chunks_cut_from_blocks_as_they_pass_are_the_chunks_cut_from_the_array():
    """A job cuts its chunks from the file as it decodes: block sizes must not matter."""
    from murmur.workers.cpu.chunking import cut_chunks

    audio = np.random.default_rng(3).standard_normal(16000 * 20).astype(np.float32)
    chunks = [Chunk(0, ((0.5, 2.0), (2.5, 4.0))), Chunk(1, ((4.0, 9.25),)), Chunk(2, ((9.3, 9.4), (12.0, 19.99)))]
    expected = [chunk_audio(audio, c) for c in chunks]
    for sizes in ([16000 * 20], [1] * 7 + [1153] * 300, [4096] * 100):
        blocks = np.split(audio, np.cumsum(sizes)[:-1])
        got = list(cut_chunks(iter(blocks), chunks))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert list(cut_chunks(iter([audio]), [])) == []


def _voice_then_room(voice_s: float, room_s: float, room_level: float, seed: int = 0) -> np.ndarray:
    """A buzzing 'voice' at about -10 dBFS, then a room's noise at `room_level` (RMS)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(voice_s * SAMPLE_RATE)) / SAMPLE_RATE
    voice = 0.4 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
    room = rng.normal(0, room_level, int(room_s * SAMPLE_RATE))
    return np.concatenate([voice, room]).astype(np.float32)


def test_a_stretch_ends_where_its_audio_falls_to_the_room_after_it():
    # the VAD let go 0.25 s after the voice stopped at 1.5 s; the chunk's span starts at 2.0 s in the source
    audio = _voice_then_room(1.5, 0.6, 0.001)
    chunk = Chunk(0, ((2.0, 4.1),), speech=((2.1, 3.75),))
    assert abs(fit_ends(chunk, audio).speech[0][1] - 3.55) <= 0.02  # with its 0.05 s of release
    assert fit_ends(chunk, audio).spans == chunk.spans and fit_ends(chunk, audio).speech[0][0] == 2.1  # starts stay


def test_a_stretch_keeps_its_end_without_quiet_after_it_or_with_sound_as_loud_as_it_after_it():
    audio = _voice_then_room(1.5, 0.6, 0.001)
    cut_at_the_end = Chunk(0, ((0.0, 2.1),), speech=((0.1, 2.09),))  # the chunk was cut inside the speech
    assert fit_ends(cut_at_the_end, audio).speech == cut_at_the_end.speech
    talked_over = Chunk(0, ((0.0, 2.1),), speech=((0.1, 1.75),))  # another voice, or noise, as loud after it
    assert fit_ends(talked_over, _voice_then_room(1.5, 0.6, 0.3)).speech == talked_over.speech
