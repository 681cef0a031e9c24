"""Where segments and words begin and end, as a pure unit: aligned words in, times on speech out."""

from __future__ import annotations

from murmur.workers.cpu.chunking import Chunk
from murmur.workers.gpu.segmentation import sentences
from murmur.workers.transcript import Word

# one span of 10 s (chunk time = source time); the VAD heard speech in three stretches
CHUNK = Chunk(0, ((0.0, 10.0),), speech=((0.1, 3.0), (4.0, 7.0), (8.5, 9.9)))


def _segments(*words: tuple[float, float, str]):
    return sentences(CHUNK, [Word(a, b, text, 0.9) for a, b, text in words], "en", -0.2, 0.01, word_timestamps=True)


def _bounds(segments):
    return [(s.start, s.end, s.text) for s in segments]


def test_a_sentence_end_does_not_absorb_the_pause_after_it():
    # the alignment ends "one." where "Two" starts: after the pause
    segments = _segments((0.1, 1.5, " Sentence"), (1.5, 4.0, " one."), (4.0, 5.0, " Two"), (5.0, 7.5, " follows."))
    assert _bounds(segments) == [(0.1, 3.0, "Sentence one."), (4.0, 7.0, "Two follows.")]


def test_a_break_aligned_inside_speech_moves_into_the_nearby_pause():
    # "Two" aligned 0.2 s before the first stretch of speech ends
    segments = _segments((0.1, 1.5, " Sentence"), (1.5, 2.8, " one."), (2.8, 5.0, " Two"), (5.0, 7.0, " follows."))
    assert _bounds(segments) == [(0.1, 3.0, "Sentence one."), (4.0, 7.0, "Two follows.")]
    assert [(w.start, w.end) for w in segments[1].words] == [(4.0, 5.0), (5.0, 7.0)]


def test_no_word_spans_a_pause_the_vad_heard():
    segments = _segments((0.1, 2.0, " One"), (2.0, 4.5, " long"), (4.5, 7.0, " sentence."))
    words = [w for s in segments for w in s.words]
    for word in words:
        assert not (word.start < 3.0 and word.end > 4.0)  # none covers the pause 3.0–4.0
    assert [(w.start, w.end) for w in words] == [(0.1, 2.0), (2.0, 3.0), (4.0, 7.0)]  # the stretch's first word starts with it


def test_the_first_word_of_a_stretch_starts_with_it_when_aligned_a_little_late():
    # the alignment starts words late; "Two" is the first word heard after the 3.0–4.0 pause
    late = _segments((0.3, 1.5, " One."), (4.4, 5.0, " Two"), (5.0, 7.0, " follows."))
    assert [(s.start, s.text) for s in late] == [(0.1, "One."), (4.0, "Two follows.")]
    assert [w.start for w in late[1].words] == [4.0, 5.0]  # only the first word of the stretch moves
    too_late = _segments((0.1, 1.5, " One."), (4.8, 5.5, " Two"), (5.5, 7.0, " follows."))
    assert too_late[1].start == 4.8  # more than 0.5 s after the stretch starts: something else was heard first


def test_text_with_no_full_stop_is_cut_at_a_long_pause_only():
    # 1.5 s pause (7.0–8.5) between two sentences the text did not separate; no word starts near the 3.0–4.0 one
    segments = _segments((0.1, 2.0, " First"), (2.0, 5.0, " part"), (5.0, 8.6, " goes"), (8.6, 9.9, " on"))
    assert _bounds(segments) == [(0.1, 7.0, "First part goes"), (8.5, 9.9, "on")]


def test_a_last_word_ending_late_is_not_cut_off_its_sentence():
    # "rolls" starts before the long pause and its aligned end runs into the next speech
    segments = _segments((4.0, 5.0, " Cinnamon"), (5.0, 6.5, " rolls"), (6.5, 8.7, " here."))
    assert _bounds(segments) == [(4.0, 7.0, "Cinnamon rolls here.")]


def test_without_known_speech_times_stay_as_aligned():
    chunk = Chunk(0, ((2.0, 12.0),))
    [segment] = sentences(chunk, [Word(0.5, 1.0, " Hi", 0.9), Word(1.0, 2.5, " there.", 0.8)], "en", -0.2, 0.01, False)
    assert (segment.start, segment.end, segment.words) == (2.5, 4.5, None)


def test_a_comma_and_a_shorter_pause_also_cut():
    # Whisper joined two sentences with a comma; the speaker paused 0.7 s (2.9–3.6) there
    chunk = Chunk(0, ((0.0, 8.0),), speech=((0.1, 2.9), (3.6, 7.0)))

    def bounds(*texts):
        timed = [Word(0.1, 1.5, texts[0], 0.9), Word(1.5, 3.6, texts[1], 0.9), Word(3.6, 5.0, texts[2], 0.9), Word(5.0, 7.0, texts[3], 0.9)]
        return _bounds(sentences(chunk, timed, "fr", -0.2, 0.01, False))

    assert bounds(" Il", " pleut,", " nous", " restons.") == [(0.1, 2.9, "Il pleut,"), (3.6, 7.0, "nous restons.")]
    assert bounds(" Il", " pleut", " nous", " restons.") == [(0.1, 7.0, "Il pleut nous restons.")]  # a pause alone must last 1 s


def test_a_word_aligned_into_a_pause_goes_to_the_speech_it_reaches():
    # "last" starts in the 3.0–4.0 pause and runs into the stretch after it: it was said there
    into_next = _segments((0.1, 1.5, " One"), (1.5, 2.9, " more"), (3.3, 4.6, " last."))
    assert [(w.start, w.end) for w in into_next[0].words][-1] == (4.0, 4.6)
    # one that ends inside the pause reaches no speech and stays with the nearest stretch
    in_pause = _segments((0.1, 1.5, " One"), (1.5, 2.9, " more"), (3.1, 3.4, " last."))
    assert [(w.start, w.end) for w in in_pause[0].words][-1] == (3.0, 3.0)


def test_a_title_does_not_end_a_sentence():
    segments = _segments((0.1, 0.5, " And"), (0.5, 1.0, " Mr."), (1.0, 2.0, " Dashwood"), (2.0, 2.9, " left."))
    assert _bounds(segments) == [(0.1, 2.9, "And Mr. Dashwood left.")]


def test_a_short_sentence_after_a_pause_stays_where_it_was_said():
    # "Yes." lies wholly after the 3.0–4.0 pause, and the next sentence starts within reach of that pause
    segments = _segments((0.1, 2.9, " One."), (4.0, 4.3, " Yes."), (4.4, 5.0, " Then"), (5.0, 6.9, " more."))
    assert _bounds(segments) == [(0.1, 3.0, "One."), (4.0, 4.3, "Yes."), (4.4, 6.9, "Then more.")]
