"""Renderings as pure functions: clock edge cases, cue numbering, the JSON contract."""

from __future__ import annotations

import json

import pytest

from murmur.tasks.outputs.formats import FORMATS, clock, render
from murmur.workers.transcript import Segment, Transcript, Word


def _segment(start, end, text, words=None):
    return Segment(chunk_idx=0, idx=0, start=start, end=end, text=text, language="en", avg_logprob=-0.123456,
                   no_speech_prob=0.0123456, compression_ratio=1.23456, words=words)


@pytest.mark.parametrize("seconds, srt", [
    (0.0, "00:00:00,000"),
    (-0.3, "00:00:00,000"),  # a time before the file reads as its start
    (1.0004, "00:00:01,000"),
    (1.0006, "00:00:01,001"),  # to the nearest millisecond
    (59.9996, "00:01:00,000"),  # rounding carries into minutes
    (3599.9999, "01:00:00,000"),  # and into hours
    (36_000.0, "10:00:00,000"),
    (100 * 3600 + 61.25, "100:01:01,250"),  # past 99 hours the hours just grow
])
def test_clock_rounds_and_carries(seconds, srt):
    assert clock(seconds, ",") == srt
    assert clock(seconds, ".") == srt.replace(",", ".")


def test_srt_and_vtt_cues():
    transcript = Transcript("job", "en", 0.9, 5.0, [_segment(0.25, 1.5, "One."), _segment(61.0, 62.125, "Two.")])
    assert render(transcript, "srt") == "1\n00:00:00,250 --> 00:00:01,500\nOne.\n\n2\n00:01:01,000 --> 00:01:02,125\nTwo.\n"
    assert render(transcript, "vtt") == "WEBVTT\n\n00:00:00.250 --> 00:00:01.500\nOne.\n\n00:01:01.000 --> 00:01:02.125\nTwo.\n"
    assert render(transcript, "txt") == "One.\nTwo."


def test_cues_never_overlap():
    transcript = Transcript("job", "en", 0.9, 5.0, [_segment(0.0, 2.5, "One."), _segment(2.0, 3.0, "Two.")])
    assert render(transcript, "srt") == "1\n00:00:00,000 --> 00:00:02,000\nOne.\n\n2\n00:00:02,000 --> 00:00:03,000\nTwo.\n"
    assert "00:00:00.000 --> 00:00:02.000" in render(transcript, "vtt")


def test_empty_transcript_renders_empty_but_valid():
    empty = Transcript("job", None, None, 4.0, [])
    assert render(empty, "txt") == "" and render(empty, "srt") == ""
    assert render(empty, "vtt") == "WEBVTT\n\n"
    assert json.loads(render(empty, "json"))["segments"] == []


def test_json_is_readme_contract():
    words = [Word(0.25, 0.5, " One", 0.9)]
    out = json.loads(render(Transcript("job", "en", 0.98, 11.0, [_segment(0.25, 1.5, "One.", words)]), "json"))
    assert list(out) == ["job_id", "language", "language_probability", "duration", "segments"]
    segment = out["segments"][0]
    assert list(segment) == ["start", "end", "text", "language", "chunk", "avg_logprob", "no_speech_prob",
                             "compression_ratio", "words"]
    assert segment["avg_logprob"] == -0.1235 and segment["no_speech_prob"] == 0.0123 and segment["compression_ratio"] == 1.2346
    assert segment["words"] == [{"start": 0.25, "end": 0.5, "text": " One", "probability": 0.9}]
    assert "words" not in json.loads(render(Transcript("j", "en", 1.0, 1.0, [_segment(0, 1, "x")]), "json"))["segments"][0]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'docx'"):
        render(Transcript("job", "en", 1.0, 1.0, []), "docx")
    assert FORMATS == ("txt", "srt", "vtt", "json")
