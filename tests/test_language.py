"""Language voting as a pure function, and where the voters go among the first batches."""

from murmur.tasks.embedded.planning import first_batches, lending, plan_batches
from murmur.tasks.tensors.store import TensorRef
from murmur.workers.gpu.language import detection_chunks, settled, vote


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


def test_the_vote_is_settled_once_no_uncast_window_could_change_it():
    three = [("en", 0.9), ("en", 0.8), ("en", 0.7)]
    assert settled(three, 2) and vote(three).language == vote(three + [("de", 0.99)] * 2).language
    assert not settled(three, 3)  # three more for German would tie, and a tie goes by probability
    assert not settled(three[:2] + [("de", 0.9)], 2)
    assert not settled([("en", 0.4)] * 4, 1)  # nobody confident yet: one confident window would outvote them all
    assert settled([("en", 0.4), ("de", 0.3)], 0)  # all cast: `vote` decides as it always has


def test_spoken_languages_leave_out_stray_votes():
    guess = vote([("en", 0.9), ("en", 0.8), ("en", 0.7), ("de", 0.9), ("de", 0.95), ("fi", 0.6)])
    assert guess.spoken() == ("de", "en")


def test_the_voting_chunks_lead_the_first_batches():
    for n in (1, 2, 3, 5, 9, 40):
        refs = [TensorRef(f"murmur:feat:job:{i}", (80, 3000), "float32") for i in range(n)]
        batches = plan_batches(n, 8, 2)
        concurrent = min(2, len(batches))
        ordered, picks = first_batches(refs, batches, concurrent)
        assert sorted(ordered, key=lambda r: r.chunk_idx) == refs  # every chunk once
        assert picks == set(detection_chunks(n))
        first = [r.chunk_idx for b in batches[:concurrent] for r in ordered[b]]
        assert picks <= set(first)  # all voters are encoded in the first round
        assert all(any(r.chunk_idx in picks for r in ordered[b]) for b in batches[:concurrent])  # shared between them


def test_a_larger_first_batch_lends_its_last_chunk_to_a_smaller_one():
    """Nine chunks on two decoders: the five-chunk batch's last (not a voter) is encoded by the other decoder."""
    refs = [TensorRef(f"murmur:feat:job:{i}", (80, 3000), "float32") for i in range(9)]
    batches = plan_batches(9, 8, 2)
    ordered, picks = first_batches(refs, batches, 2)
    lent = lending(ordered, batches[:2], picks)
    assert list(lent) == [0] and lent[0][0] == 1
    assert lent[0][1] == ordered[batches[0]][-1] and lent[0][1].chunk_idx not in picks
    even = plan_batches(8, 8, 2)
    ordered, picks = first_batches(refs[:8], even, 2)
    assert lending(ordered, even, picks) == {}  # equal batches: nothing to even out
