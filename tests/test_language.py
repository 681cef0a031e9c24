"""Language voting as a pure function."""

from murmur.workers.gpu.language import detection_chunks, vote


def test_detection_chunks_spread_over_the_whole_file():
    assert detection_chunks(0) == []
    assert detection_chunks(1) == [0]
    assert detection_chunks(3) == [0, 1, 2]
    picked = detection_chunks(100, k=5)
    assert picked[0] == 0 and picked[-1] == 99 and len(picked) == 5


def test_vote_counts_confident_windows_and_breaks_ties_by_probability():
    assert vote([]).language is None
    assert vote([("de", 0.9), ("en", 0.6), ("en", 0.7), ("fr", 0.3)]).language == "en"
    tie = vote([("de", 0.95), ("en", 0.6), ("de", 0.4), ("en", 0.2)])
    assert tie.language == "de" and tie.votes == {"de": 1, "en": 1}
    assert vote([("sv", 0.3), ("en", 0.2)]).language == "sv"  # nobody confident: everybody votes


def test_spoken_languages_leave_out_stray_votes():
    guess = vote([("en", 0.9), ("en", 0.8), ("en", 0.7), ("de", 0.9), ("de", 0.95), ("fi", 0.6)])
    assert guess.spoken() == ("de", "en")
