"""Short chunks of different jobs share a Whisper window and each gets back only its own words."""

from __future__ import annotations

import numpy as np
import pytest

from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.cpu.chunking import chunk_audio, plan_heard
from murmur.workers.cpu.features import log_mel
from murmur.workers.cpu.vad import SileroVad
from murmur.workers.gpu.decode import decode_batch
from murmur.workers.gpu.model import load_model
from murmur.workers.gpu.packing import GAP_S, plan_windows
from murmur.workers.window import WINDOW_S
from murmur.workers.options import JobOptions
from tests.conftest import DATA, word_error_rate, words

# five voices: a 1961 speech, a LibriSpeech reader, a dictation demo, an aligner's test
# speaker and a LibriVox reader, 2.8 to 11 s each
CLIPS = ["jfk_inaugural_1961.flac", "librispeech_61-70968-0000.flac", "pocketsphinx_goforward.wav",
         "mfa_thoughts.flac", "librivox_sense_sensibility_0890.wav"]


def test_windows_hold_each_chunk_once_never_two_of_one_job_and_never_more_than_30_s():
    durations = [29.5, 9.0, 8.0, 12.0, 3.0, 3.0, 14.0, 2.0]
    jobs = ["a", "b", "c", "d", "e", "e", "f", "g"]
    windows = plan_windows(durations, jobs)
    members = sorted(m for w in windows for m in w.members)
    assert members == list(range(len(durations)))
    for w in windows:
        assert len({jobs[m] for m in w.members}) == len(w.members)
        assert w.length <= WINDOW_S
        for (a, b), (c, _) in zip(w.spans, w.spans[1:]):
            assert c - b == pytest.approx(GAP_S)
    assert [w.members for w in windows if 0 in w.members] == [(0,)]  # a full chunk stays alone
    assert len(windows) == 4  # 29.5 | 14 + 12 | 9 + 8 + 3 + 2 | e's second 3
    assert plan_windows([10.0, 10.0], ["a", "a"])[1].members == (1,)  # one job's chunks never share
    assert len(plan_windows([5.0, 5.0, 5.0], ["a", "b", "c"], [b"x", b"x", b"y"])) == 2  # nor one clip's copies


def test_a_word_belongs_to_the_chunk_its_time_overlaps_most():
    window = plan_windows([5.0, 5.0], ["a", "b"])[0]
    (a0, a1), (b0, b1) = window.spans
    assert window.member_of(a1 - 0.3, b0 - 0.1) == 0  # the last word, its end stretched over the gap
    assert window.member_of(a1 + 0.1, b0 + 0.3) == 1  # the first word, starting in the gap
    assert window.member_of(a1 + 0.2, a1 + 0.2) == 0  # a word of no length in the gap: the nearest chunk
    assert window.member_of(b0 - 0.2, b0 - 0.2) == 1


@pytest.fixture(scope="module")
def prepared():
    vad = SileroVad()
    out = []
    for name in CLIPS:
        audio = decode_audio(str(DATA / name))
        chunks = plan_heard(vad.each(audio), audio.size / SAMPLE_RATE)
        assert len(chunks) == 1, name
        out.append((name, audio.size / SAMPLE_RATE, chunks[0], log_mel([chunk_audio(audio, chunks[0])])[0]))
    return out


@pytest.mark.weights
def test_packed_clips_keep_their_own_words_and_their_quality(prepared):
    model = load_model("base", "cpu", "int8", threads=2)
    options = JobOptions(language="en", model="base")
    chunks = [chunk for _, _, chunk, _ in prepared]
    features = np.stack([f for *_, f in prepared])
    jobs = [name for name, *_ in prepared]
    assert len(plan_windows([c.duration for c in chunks], jobs)) < len(chunks)  # they do share windows
    alone = decode_batch(model, features, chunks, options, "en")
    packed = decode_batch(model, features, chunks, options, "en", jobs=jobs)
    references = {name: (DATA / name).with_suffix(".txt").read_text() for name in CLIPS}
    for (name, duration, _, _), own, mine in zip(prepared, alone, packed):
        text = " ".join(s.text for s in mine)
        assert text, name
        solo = " ".join(s.text for s in own)
        assert word_error_rate(references[name], text) <= word_error_rate(references[name], solo) + 0.3, (name, text, solo)
        strays = set(words(text)) - set(words(references[name])) - set(words(solo))
        others = {w for other, ref in references.items() if other != name for w in words(ref)}
        assert not strays & others, (name, text)  # no word came over from another clip
        for segment in mine:
            assert 0.0 <= segment.start <= segment.end <= duration + 0.01, (name, segment)
    assert {"fellow", "americans", "country"} <= set(words(" ".join(s.text for s in packed[0])))
    assert {"wizard", "curtain"} <= set(words(" ".join(s.text for s in packed[1])))
