"""Who spoke when: voiceprints taken at prepare, clustered at assembly, words labelled by them.

Real weights (Whisper base, the resemblyzer encoder) on real recordings of real voices;
the embedded runner on SQLite here, the fleet against it in test_distributed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from murmur.db.session import sessions, upgrade
from murmur.tasks.context import Context
from murmur.tasks.embedded.runner import run as run_embedded
from murmur.tasks.outputs.formats import render
from murmur.workers.labels import Turn, label_segments
from murmur.workers.cpu.speakers import mel_filters, slices
from murmur.workers.errors import MurmurError
from murmur.workers.options import JobOptions
from murmur.workers.transcript import Segment, Word
from tests.conftest import DATA, run_cli

CONVERSATION = "dev_conv_en_3spk_female.flac"  # three women taking turns, two overlaps; .rttm beside it


def der(transcript, rttm: str, collar: float = 0.25) -> float:
    """Diarization error rate of the transcript's words (their speakers, merged over short gaps) against an RTTM."""
    from pyannote.core import Annotation, Segment as Span, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = Annotation()
    for line in (DATA / rttm).read_text().splitlines():
        parts = line.split()
        reference[Span(float(parts[3]), float(parts[3]) + float(parts[4])), len(reference)] = parts[7]
    scored = Timeline([Span(0.0, transcript.duration)])  # the whole file
    return DiarizationErrorRate(collar=collar)(reference, hypothesis(transcript), uem=scored)


def hypothesis(transcript):
    from pyannote.core import Annotation, Segment as Span

    out = Annotation()
    for s in transcript.segments:
        if s.end > s.start and s.speaker:
            out[Span(s.start, s.end), len(out)] = s.speaker
    return out.support(collar=0.5)


def test_the_encoders_filters_are_slaneys_mel_filters_as_librosa_makes_them():
    import librosa

    assert np.abs(mel_filters(16000, 400, 40) - librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)).max() < 1e-7


def test_the_encoder_gives_what_torch_gives_with_the_same_weights_to_its_int8_rounding():
    """librosa's mel spectrogram and torch's float32 LSTM, as the encoder was trained with, on real speech:
    int8 moves each print far less than a slice of the same voice three seconds on is moved."""
    import librosa
    import torch

    from murmur.workers.cpu.audio import decode_audio
    from murmur.workers.cpu.speakers import VoiceEncoder, _checkpoint, _loudness, _weights_path

    audio = decode_audio(str(DATA / CONVERSATION))
    pieces = [_loudness(audio[i * 12000:i * 12000 + 24000]) for i in range(0, 40, 4)]
    encoder = VoiceEncoder()
    mels = np.stack([librosa.feature.melspectrogram(y=p, sr=16000, n_fft=400, hop_length=160, n_mels=40).T for p in pieces])
    assert np.abs(encoder._mels(np.stack(pieces)) - mels).max() < 1e-4 * mels.max()
    weights = {k: torch.from_numpy(v) for k, v in _checkpoint(_weights_path()).items()}
    lstm, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    lstm.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("lstm.")})
    linear.load_state_dict({k[7:]: v for k, v in weights.items() if k.startswith("linear.")})
    with torch.inference_mode():
        _, (hidden, _) = lstm(torch.from_numpy(mels.astype(np.float32)))
        expected = torch.nn.functional.normalize(torch.relu(linear(hidden[-1])), dim=1).numpy()
    similarity = encoder.embed(pieces) @ expected.T
    assert np.diag(similarity).min() > 0.995  # 0.9992 with AVX-512 VNNI here, 0.9965 on a Haswell under qemu-user
    assert (similarity - np.eye(len(pieces)) * 2).max() < 0.99


def test_listening_embeds_every_slice_of_every_chunk_as_each_alone_would_give(monkeypatch):
    """Slices gathered over chunks and embedded in batches each get their own print (to the int8 rounding,
    whose scale is the batch's), the same on every run and on any number of threads, and `into` is whole
    once the last chunk's audio is taken, as prepare takes it (zip, chunks first)."""
    from murmur.workers.cpu import speakers
    from murmur.workers.cpu.audio import decode_audio
    from murmur.workers.cpu.chunking import Chunk

    audio = decode_audio(str(DATA / CONVERSATION))
    chunks = [Chunk(n, ((t, t + 4.0), (t + 5.0, t + 10.0))) for n, t in enumerate(range(0, 60, 10))]
    pieces = [np.concatenate([audio[int(a * 16000):int(b * 16000)] for a, b in c.spans]) for c in chunks]
    monkeypatch.setattr(speakers, "_PENDING", 40)  # one flush midway, one at the end
    runs = []
    for threads in (2, 1):
        into: list = []
        for chunk, piece in zip(chunks, speakers.listen(chunks, iter(pieces), into, threads=threads)):
            assert piece is pieces[chunk.idx]
        runs.append(into)
    wanted = [(s, e) for c in chunks for s, e in slices(c.spans)]
    assert [(s, e) for s, e, _ in runs[0]] == wanted and len(wanted) > 60
    prints = np.stack([v for *_, v in runs[0]])
    assert np.array_equal(prints, np.stack([v for *_, v in runs[1]]))
    first = [int(round(s * 16000)) for s, _ in wanted]
    alone = np.stack([speakers.voice_encoder().embed([audio[f:f + int(round((e - s) * 16000))]])[0] for f, (s, e) in zip(first, wanted)])
    similarity = prints @ alone.T
    assert np.diag(similarity).min() > 0.995  # > 0.999 with AVX-512 VNNI here, 0.9985 (ten slices) on a Haswell
    assert np.array_equal(np.argmax(similarity, axis=1), np.arange(len(wanted)))


def test_the_tree_is_scipys_average_linkage_tree():
    from scipy.cluster.hierarchy import fcluster, linkage

    from murmur.workers.cpu.audio import decode_audio
    from murmur.workers.cpu.diarization import average_linkage, cut
    from murmur.workers.cpu.speakers import voice_encoder

    audio = decode_audio(str(DATA / CONVERSATION))
    prints = voice_encoder().embed([audio[i * 12000:i * 12000 + 24000] for i in range(90)])
    merges = average_linkage(prints)
    tree = linkage(prints.astype(np.float64), "average", metric="cosine")
    assert np.allclose(np.sort(merges[:, 2]), np.sort(tree[:, 2]))
    for k in (2, 3, 4, 6):
        ours, theirs = cut(merges, len(prints), k), fcluster(tree, k, "maxclust")
        assert {frozenset(np.flatnonzero(ours == c)) for c in set(ours)} == \
               {frozenset(np.flatnonzero(theirs == c)) for c in set(theirs)}


def test_slices_cover_each_span_and_skip_scraps():
    assert slices([(0.0, 0.3)]) == []
    assert slices([(1.0, 2.0)]) == [(1.0, 2.0)]
    cut = slices([(0.0, 4.0)])
    assert cut[0] == (0.0, 1.5) and cut[-1] == pytest.approx((2.5, 4.0))
    assert all(b - a == pytest.approx(1.5) for a, b in cut)
    assert all(later[0] - earlier[0] <= 0.75 + 1e-9 for earlier, later in zip(cut, cut[1:]))


def test_words_take_the_speaker_who_holds_their_span_and_none_where_nobody_spoke():
    turns = [Turn(0.0, 2.0, "S1"), Turn(2.0, 4.0, "S2"), Turn(6.0, 8.0, "S1")]
    words = [Word(0.1, 0.5, " Hello", 0.9), Word(1.7, 2.6, " there.", 0.9), Word(2.7, 3.0, " Yes", 0.9),
             Word(4.5, 5.0, " um", 0.9), Word(6.1, 6.5, " fine.", 0.9)]
    segment = Segment(0, 0, 0.1, 6.5, "Hello there. Yes um fine.", "en", -0.2, 0.01, 1.0, words)
    out = label_segments([segment], turns, keep_words=True)
    assert [(s.speaker, s.text) for s in out] == [("S1", "Hello"), ("S2", "there. Yes um"), ("S1", "fine.")]
    assert [w.speaker for s in out for w in s.words] == ["S1", "S2", "S2", None, "S1"]
    assert out[0].start == 0.1 and out[-1].end == 6.5
    assert label_segments([segment], turns, keep_words=False)[0].words is None


@pytest.mark.parametrize("options, reason", [
    ({"diarize": True, "speakers": 0}, "invalid speakers 0"),
    ({"diarize": True, "min_speakers": 3, "max_speakers": 2}, "--min-speakers 3 is more than --max-speakers 2"),
    ({"speakers": 2}, "give --diarize too"),
    ({"diarize": True, "speakers": 2, "max_speakers": 3}, "not both"),
    ({"diarize": True, "speakers": "2"}, "use a whole number"),
    ({"diarize": "yes"}, "use true or false"),
])
def test_bad_speaker_options_are_refused_with_a_reason(options, reason):
    with pytest.raises(MurmurError, match=reason):
        JobOptions(**options)


def test_the_cli_refuses_bad_speaker_options_before_any_work():
    refused = run_cli("transcribe", str(DATA / "jfk_inaugural_1961.flac"), "--diarize", "--min-speakers", "3", "--max-speakers", "2")
    assert refused.returncode == 1
    assert "--min-speakers 3 is more than --max-speakers 2" in refused.stderr


def test_without_diarize_the_options_and_outputs_are_what_they_were():
    options = JobOptions(word_timestamps=True)
    assert not set(options.to_json()) & {"diarize", "speakers", "min_speakers", "max_speakers"}
    assert options.batch_key() == JobOptions(word_timestamps=True, diarize=True).batch_key()  # they decode together
    segment = Segment(0, 0, 0.0, 1.0, "Hi.", "en", -0.1, 0.0, 1.0, [Word(0.0, 1.0, " Hi.", 0.9)])
    assert json.loads(json.dumps(segment.to_json()))["words"] == [{"start": 0.0, "end": 1.0, "text": " Hi.", "probability": 0.9}]
    assert "speaker" not in segment.to_json()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('speakers') / 'murmur.db'}"
    upgrade(url)
    return Context(db=sessions(url), device="cpu", compute_type="int8", threads=2)


@pytest.mark.weights
def test_a_three_speaker_conversation_gets_three_speakers_in_the_right_places(embedded):
    transcript = run_embedded(embedded, str(DATA / CONVERSATION), JobOptions(language="en", diarize=True, word_timestamps=True))
    speakers = [s.speaker for s in transcript.segments]
    assert set(speakers) == {"S1", "S2", "S3"}
    assert list(dict.fromkeys(speakers)) == ["S1", "S2", "S3"]  # named in order of first appearance
    assert der(transcript, CONVERSATION.replace(".flac", ".rttm")) < 0.15
    turns = _turns(embedded, transcript.job_id)
    for segment in transcript.segments:
        for word in segment.words:
            if word.speaker is not None:  # a word's voice is one heard in its span
                assert any(t.speaker == word.speaker and t.start <= word.end and word.start <= t.end for t in turns)
    vtt = render(transcript, "vtt")
    assert "<v S1>" in vtt and "<v S3>" in vtt
    lines = render(transcript, "txt").splitlines()
    assert lines[0].startswith("S1: ")
    changes = sum(1 for a, b in zip(speakers, speakers[1:]) if a != b)
    assert sum(1 for line in lines if line[:4] in ("S1: ", "S2: ", "S3: ")) == changes + 1


@pytest.mark.weights
def test_an_exact_count_is_obeyed_one_voice_gets_one_label_and_silence_none(embedded):
    two = run_embedded(embedded, str(DATA / CONVERSATION), JobOptions(language="en", diarize=True, speakers=2))
    assert {s.speaker for s in two.segments} == {"S1", "S2"}
    one = run_embedded(embedded, str(DATA / "jfk_inaugural_1961.flac"), JobOptions(language="en", diarize=True))
    assert {s.speaker for s in one.segments} == {"S1"}
    quiet = run_embedded(embedded, str(DATA / "nst_quiet_room_4s.wav"), JobOptions(language="en", diarize=True))
    assert quiet.segments == []


def _turns(ctx: Context, job_id: str) -> list[Turn]:
    from sqlalchemy import select

    from murmur.db.models import Voiceprint

    with ctx.db() as s:
        return [Turn(*t) for t in s.scalar(select(Voiceprint.turns).where(Voiceprint.job_id == job_id))]


KNOWN = {"Ann": "known_speaker_ls3080.ogg", "Bea": "known_speaker_ls1688.ogg", "Cat": "known_speaker_ls533.ogg"}
IN_THE_RTTM = {"Ann": "S_ls3080", "Bea": "S_ls1688", "Cat": "S_ls533"}  # the clips are other utterances of these voices


@pytest.mark.weights
def test_known_speakers_get_their_names_and_a_stranger_keeps_a_number(embedded):
    options = JobOptions(language="en", diarize=True, known_speaker_names=["Ann", "Cat", "Kennedy"],
                         known_speaker_references=[str(DATA / KNOWN["Ann"]), str(DATA / KNOWN["Cat"]),
                                                   str(DATA / "jfk_inaugural_1961.flac")])
    with pytest.raises(MurmurError, match="known speaker 'Kennedy': the reference clip lasts more than 11.0 s"):
        run_embedded(embedded, str(DATA / CONVERSATION), options)
    options = JobOptions(language="en", diarize=True, known_speaker_names=["Ann", "Cat"],
                         known_speaker_references=[str(DATA / KNOWN["Ann"]), str(DATA / KNOWN["Cat"])])
    transcript = run_embedded(embedded, str(DATA / CONVERSATION), options)
    names = {s.speaker for s in transcript.segments}
    assert names == {"Ann", "Cat", "S3"}  # Bea gave no clip: her voice keeps its number, the third to appear
    reference = [line.split() for line in (DATA / CONVERSATION.replace(".flac", ".rttm")).read_text().splitlines()]
    agree = total = 0
    for s in transcript.segments:
        middle = (s.start + s.end) / 2
        truth = {p[7] for p in reference if float(p[3]) <= middle <= float(p[3]) + float(p[4])}
        if s.speaker in IN_THE_RTTM and truth:
            total += 1
            agree += IN_THE_RTTM[s.speaker] in truth
    assert total >= 15 and agree / total >= 0.9


@pytest.mark.weights
def test_a_reference_that_is_not_audio_or_too_short_fails_its_job_with_a_reason(embedded, tmp_path):
    (tmp_path / "notes.wav").write_bytes(b"not audio at all" * 100)
    short = tmp_path / "short.wav"
    import soundfile  # noqa: F401 - librosa's, beside resemblyzer

    soundfile.write(short, np.zeros(16000, np.float32), 16000)
    for clip, reason in ((tmp_path / "notes.wav", "known speaker 'Ann': not a readable audio file: notes.wav"),
                         (short, "known speaker 'Ann': the reference clip lasts 1.0 s")):
        with pytest.raises(MurmurError, match=reason):
            run_embedded(embedded, str(DATA / "jfk_inaugural_1961.flac"),
                         JobOptions(diarize=True, known_speaker_names=["Ann"], known_speaker_references=[str(clip)]))
    with pytest.raises(MurmurError, match="1 known speaker name"):
        JobOptions(diarize=True, known_speaker_names=["Ann"], known_speaker_references=[])
    with pytest.raises(MurmurError, match="give --diarize too"):
        JobOptions(known_speaker_names=["Ann"], known_speaker_references=[str(short)])
