"""Speech Whisper skipped is decoded again: a window that ends early or loops loses nothing after it."""

from __future__ import annotations

import json

import pytest

from murmur.db.session import sessions, upgrade
from murmur.tasks.context import Context
from murmur.tasks.embedded import runner as embedded
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.gpu.segmentation import before_loop
from murmur.workers.options import JobOptions
from tests.conftest import DATA, words


def _words(text: str) -> list[tuple[str, list[int]]]:
    """Words as the tokenizer groups them, one token per letter (only the counts matter)."""
    return [(" " + w, list(range(len(w)))) for w in text.split()]


def test_a_loop_is_cut_where_a_sentence_comes_again():
    text = "Les enfants jouent dehors. Le musée ouvre demain matin. Le musée ouvre demain matin. Le musée"
    tokens = sum(len(t) for _, t in _words("Les enfants jouent dehors. Le musée ouvre demain matin."))
    assert before_loop(_words(text)) == tokens


def test_short_repeats_and_plain_text_are_kept():
    for text in ("Thank you. Thank you. Thank you.", "One sentence here. Another one there. And a third, unfinished"):
        assert before_loop(_words(text)) == sum(len(t) for _, t in _words(text))
    assert before_loop([]) == 0


def test_the_tail_of_a_chunk_keeps_its_source_times():
    chunk = Chunk(3, ((1.0, 4.0), (6.0, 9.0)), speech=((1.2, 3.8), (6.1, 8.5)))
    assert chunk.to_chunk(2.0) == 1.0 and chunk.to_chunk(5.0) == 3.0 and chunk.to_chunk(7.0) == 4.0
    tail = chunk.tail(3.5)
    assert tail == Chunk(3, ((3.5, 4.0), (6.0, 9.0)), speech=((3.5, 3.8), (6.1, 8.5)))
    assert tail.to_source(0.0) == 3.5 and tail.to_source(1.0) == 6.5


@pytest.mark.weights
def test_sentences_after_an_early_end_are_transcribed(sqlite_url, base_model):
    """Five French sentences in one window: Whisper ends after "…et à bientôt." and the
    last three must come from decoding the rest of the window again."""
    upgrade(sqlite_url)
    ctx = Context(db=sessions(sqlite_url), device="cpu", compute_type="int8", threads=2)
    result = embedded.run(ctx, str(DATA / "fr_1min_tail.flac"), JobOptions(language="fr", model="base"))
    reference = json.loads((DATA / "fr_1min_tail.json").read_text())["segments"]
    assert len({s.chunk_idx for s in result.segments}) == 1  # one window: the early end is inside it
    for sentence in reference:  # every sentence has a segment starting on it
        assert min(abs(s.start - sentence["start"]) for s in result.segments) <= 0.3, (sentence, result.segments)
    assert {"direction", "municipale"} <= set(words(result.text))
    for before, after in zip(result.segments, result.segments[1:]):
        assert before.end <= after.start  # the rest follows what was heard, nothing is said twice
    assert [s.idx for s in result.segments] == list(range(len(result.segments)))
