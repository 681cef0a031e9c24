"""Prompts and hotwords, per job inside shared batches; and the rule that a window of speech whose
text loops or is judged silent is decoded again rather than dropped."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from tests.conftest import DATA, words
from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.cpu.features import log_mel
from murmur.workers.errors import MurmurError
from murmur.workers.gpu.decode import decode_batch
from murmur.workers.gpu.packing import plan_windows
from murmur.workers.options import JobOptions
from murmur.workers.prompt import PROMPT_BUDGET, Prompt

TERMS = "PostgreSQL, Celery, CTranslate2, nginx, NumPy, Redis, PyTorch."  # the set's prompt: 4 spoken, 3 not
KEYTERMS = DATA / "keyterms_celery_redis.flac"
JFK = DATA / "jfk_inaugural_1961.flac"


def test_prompt_text_budget_and_options():
    assert not Prompt() and not Prompt("", None)
    assert Prompt("Celery, Redis.", "KEDA").previous_text() == "KEDA Celery, Redis."
    options = JobOptions(prompt="Celery, Redis.", hotwords=" KEDA ")
    assert options.prompting == Prompt("Celery, Redis.", " KEDA ")
    assert JobOptions.from_json(options.to_json()) == options
    assert "prompt" not in JobOptions().to_json()  # a row without a prompt reads as it did before prompts
    assert JobOptions(prompt="   ").prompt is None  # an empty form field is no prompt
    assert JobOptions(prompt="x").batch_key() == JobOptions().batch_key()  # prompts ride in shared batches
    for bad, reason in [({"prompt": 3}, "invalid prompt 3: use text"), ({"hotwords": ["a"]}, "invalid hotwords"),
                        ({"prompt": "word " * 300}, f"300 tokens long: Whisper reads at most {PROMPT_BUDGET}"),
                        ({"prompt": "word " * 150, "hotwords": "word " * 150}, "300 tokens long"),
                        ({"hotwords": "x" * 5000}, "hotwords too long (5000 characters)")]:
        with pytest.raises(MurmurError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            JobOptions.from_json(bad)
    JobOptions(prompt="word " * 200)  # within the budget


def test_a_window_holds_one_prompt():
    assert len(plan_windows([5.0, 5.0], ["a", "b"])) == 1
    assert len(plan_windows([5.0, 5.0], ["a", "b"], prompts=[Prompt("x"), Prompt()])) == 2
    assert len(plan_windows([5.0, 5.0, 5.0], ["a", "b", "c"], prompts=[Prompt("x"), Prompt(), Prompt("x")])) == 2


def _clip(path) -> tuple[np.ndarray, Chunk]:
    audio = decode_audio(path)
    seconds = audio.size / SAMPLE_RATE
    return audio, Chunk(0, ((0.0, seconds),), ((0.0, seconds),))


def _texts(segments: list[list]) -> list[str]:
    return [" ".join(s.text for s in chunk) for chunk in segments]


@pytest.mark.weights
def test_prompted_and_unprompted_jobs_share_a_batch_and_each_gets_its_own_text(base_model):
    (a, chunk_a), (b, chunk_b) = _clip(KEYTERMS), _clip(JFK)
    features = log_mel([a, b], base_model.n_mels)
    options = JobOptions(language="en")
    [plain] = _texts(decode_batch(base_model, features[:1], [chunk_a], options, "en"))
    [prompted] = _texts(decode_batch(base_model, features[:1], [chunk_a], options, "en", prompts=[Prompt(TERMS)]))
    [jfk] = _texts(decode_batch(base_model, features[1:], [chunk_b], options, "en"))
    # base misspells the names without a prompt and spells more of them with one; which ones depends on the
    # CPU (CTranslate2's int8 kernels differ: one machine here wrote "RunC Translate2", another "run CTranslate2")
    spoken = {"celery", "redis", "ctranslate2", "postgresql"}
    assert len(spoken & set(words(prompted))) >= 3 and len(spoken & set(words(prompted))) > len(spoken & set(words(plain))), \
        (plain, prompted)
    assert not {"nginx", "numpy", "pytorch"} & set(words(prompted))  # and the terms not spoken stay out
    assert "country" in words(jfk)
    both = [Prompt(TERMS), Prompt()]
    assert _texts(decode_batch(base_model, features, [chunk_a, replace(chunk_b, idx=1)], options, "en", prompts=both)) \
        == [prompted, jfk]
    # with packing allowed, the two short chunks would share a window: their prompts keep them apart
    assert _texts(decode_batch(base_model, features, [chunk_a, replace(chunk_b, idx=1)], options, "en",
                               jobs=["a", "b"], prompts=both)) == [prompted, jfk]


@pytest.mark.weights
def test_hotwords_alone_spell_the_terms(base_model):
    audio, chunk = _clip(KEYTERMS)
    features = log_mel([audio], base_model.n_mels)
    [text] = _texts(decode_batch(base_model, features, [chunk], JobOptions(language="en"), "en",
                                 prompts=[Prompt(hotwords="Celery, Redis, CTranslate2, PostgreSQL")]))
    assert len({"celery", "redis", "ctranslate2", "postgresql"} & set(words(text))) >= 3, text  # none without


@dataclass
class _Looped:
    sequences_ids: list
    scores: list
    no_speech_prob: float


class _LoopsAtFirst:
    """A Whisper whose beam search loops from its first token on every window (as base's int8 kernels
    do on some CPUs for some windows); sampling at a temperature reads the audio as the model does."""

    def __init__(self, whisper, token: int, sampled: bool = True) -> None:
        self._whisper, self._token, self._sampled = whisper, token, sampled
        self.calls: list[float] = []
        self.lengths: list[int] = []

    def generate(self, encoded, prompts, **kwargs):
        temperature = kwargs.get("sampling_temperature", 0.0) if kwargs.get("beam_size", 5) == 1 else 0.0
        self.calls.append(temperature)
        self.lengths.append(kwargs["max_length"])
        if temperature and self._sampled:
            return self._whisper.generate(encoded, prompts, **kwargs)
        return [_Looped([[self._token] * 200], [-0.05], 0.01) for _ in prompts]

    def __getattr__(self, name):
        return getattr(self._whisper, name)


@pytest.mark.weights
def test_a_window_whose_text_loops_from_the_start_is_decoded_again(base_model):
    audio, chunk = _clip(JFK)
    features = log_mel([audio], base_model.n_mels)
    token = base_model.tokenizer.encode(" the")[0]
    looping = _LoopsAtFirst(base_model.whisper, token)
    [segments] = decode_batch(replace(base_model, whisper=looping), features, [chunk], JobOptions(language="en"), "en")
    assert {"country", "fellow", "americans"} <= set(words(" ".join(s.text for s in segments)))
    assert looping.calls[:2] == [0.0, 0.2]  # the beam looped; the first temperature read the speech
    # a window that loops at every try is given up as noise: nothing made up, no error
    stuck = _LoopsAtFirst(base_model.whisper, token, sampled=False)
    assert decode_batch(replace(base_model, whisper=stuck), features, [chunk], JobOptions(language="en"), "en") == [[]]
    assert stuck.calls == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # a sampled reading is held to the length its speech could fill: never the decoder's whole 448
    assert stuck.lengths[0] == 448 and all(150 < n < 200 for n in stuck.lengths[1:]), stuck.lengths
    # a window the VAD heard no speech in is not tried again
    quiet = _LoopsAtFirst(base_model.whisper, token)
    unheard = Chunk(0, chunk.spans, ())
    assert decode_batch(replace(base_model, whisper=quiet), features, [unheard], JobOptions(language="en"), "en") == [[]]
    assert quiet.calls == [0.0]
