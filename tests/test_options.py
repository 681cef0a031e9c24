"""JobOptions validation as a pure unit: every producer's values pass through it."""

from __future__ import annotations

import pytest

from murmur.workers.errors import MurmurError
from murmur.workers.options import LANGUAGES, JobOptions, OutputLanguage, WhisperTask


def test_defaults_and_round_trip():
    options = JobOptions()
    assert (options.model, options.task, options.batch_size, options.beam_size) == ("base", "transcribe", 8, 5)
    assert JobOptions.from_json(options.to_json()) == options
    stored = JobOptions(task="translate", output_language="en", multilingual=False).to_json()
    assert stored["task"] == "translate" and type(stored["task"]) is str  # plain JSON on the job row
    assert JobOptions.from_json(stored).task is WhisperTask.translate


@pytest.mark.parametrize("values, reason", [
    ({"task": "summarise"}, "invalid task 'summarise': use transcribe or translate"),
    ({"output_language": "de"}, "invalid output language 'de': use hybrid or en"),
    ({"beam_size": 0}, "invalid beam size 0: use a whole number from 1 to 16"),
    ({"beam_size": 64}, "invalid beam size 64"),
    ({"batch_size": 257}, "invalid batch size 257"),
    ({"beam_size": "five"}, "invalid beam size 'five'"),
    ({"beam_size": True}, "invalid beam size True"),
    ({"seed": [1]}, "invalid seed [1]"),
    ({"multilingual": "yes"}, "invalid multilingual 'yes': use true or false"),
    ({"word_timestamps": 1}, "invalid word timestamps 1"),
    ({"model": ""}, "invalid model ''"),
    ({"model": 3}, "invalid model 3"),
    ({"language": "en-US"}, "invalid language 'en-US'"),
    ({"language": "english"}, "invalid language 'english': use a Whisper language code"),
    ({"language": "xx"}, "invalid language 'xx'"),
    ({"language": 7}, "invalid language 7"),
    ({"task": ["translate"]}, "invalid task"),
    ({"multilingual": True, "language": "en"}, "do not also give --language"),
    ({"colour": "red", "beam_size": 2}, "unknown option(s): colour"),
])
def test_bad_values_fail_with_a_readable_reason(values, reason):
    with pytest.raises(MurmurError) as caught:
        JobOptions.from_json(values)
    assert reason in str(caught.value)


def test_batch_key_ignores_only_the_batch_size():
    a, b = JobOptions(batch_size=4), JobOptions(batch_size=16)
    assert a.batch_key() == b.batch_key()
    assert JobOptions(beam_size=1).batch_key() != a.batch_key()
    assert JobOptions(multilingual=True, output_language=OutputLanguage.en).batch_key() != JobOptions(multilingual=True).batch_key()


@pytest.mark.weights
def test_the_language_codes_are_the_tokenizers():
    from murmur.workers.gpu.model import resolve_model
    from murmur.workers.gpu.tokenizer import Tokenizer

    assert LANGUAGES - {"yue"} == set(Tokenizer(resolve_model("base"), True).languages)  # yue: large-v3's addition
