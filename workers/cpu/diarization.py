"""Who spoke when: a job's voiceprints clustered into speakers, and speaker turns over its speech (`labels` gives
the words their speakers when the transcript is read).

Assembly runs this once per job, on the CPU: the prints are the job's own
(`speakers.Voiceprints`), so no other job's voices can enter its clusters,
and the same prints always give the same turns.

How many speakers, when no count is given: the prints are clustered bottom-up
(average linkage, cosine distance). If even the last merge joins voices closer
than SAME_VOICE, there is one speaker; otherwise the count is the one before
the widest jump in merge distance, among counts whose every cluster holds a
share of the speech (MIN_SHARE, MIN_PRINTS) — a cough or a door is not a
speaker. Each print then goes to its nearest cluster centre, a few times over.
Measured on the dev set (bench/bench_diarization.py) and on single voices
(tests/data): thresholds that fit the AMI meetings' close voices split single
voices elsewhere; these are the measured compromise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from murmur.workers.cpu.speakers import Voiceprints
from murmur.workers.labels import Turn

SAME_VOICE = 0.26  # cosine distance: a last merge below this joins one voice
MIN_SHARE = 0.06  # of the prints: a smaller cluster is absorbed by its nearest neighbour
MIN_PRINTS = 4  # nor is a voice heard in fewer prints (about 3 s of speech) a speaker
MAX_ESTIMATED = 8  # without a count, at most this many speakers are told apart
MAX_TREE = 2000  # prints in the tree (memory grows with their square): a longer file's are sampled evenly, then all assigned
_FRAME_S = 0.01
_REFINE_ROUNDS = 3
KNOWN_VOICE = 0.75  # cosine similarity: measured 0.88 for the same voice, at most 0.69 for another (tests/data clips)


def speaker_turns(prints: Voiceprints, speech: Sequence[tuple[float, float]], speakers: int | None = None,
                  min_speakers: int | None = None, max_speakers: int | None = None,
                  known: dict[str, np.ndarray] | None = None) -> list[Turn]:
    """Each stretch of speech split among the speakers: every 10 ms goes to the speaker of the nearest print.

    Speakers are S1, S2, ... in order of first appearance; a cluster that matches a
    known speaker's reference print (`known`: name → unit vector) takes their name.
    """
    if len(prints) == 0:
        return []
    labels = cluster(prints.vectors, speakers, min_speakers, max_speakers)
    names = _names(prints, labels, known or {})
    centres = prints.times.mean(axis=1)
    order = np.argsort(centres, kind="stable")
    centres, labels = centres[order], labels[order]
    turns: list[Turn] = []
    for a, b in sorted(speech):
        frames = np.arange(a, b, _FRAME_S)
        if frames.size == 0:
            continue
        nearest = _nearest(centres, frames)
        runs = np.flatnonzero(np.diff(labels[nearest])) + 1
        for first, last in zip([0, *runs], [*runs, frames.size]):
            speaker = names[labels[nearest[first]]]
            start, end = round(float(frames[first]), 3), round(min(float(frames[last - 1]) + _FRAME_S, b), 3)
            if turns and turns[-1].speaker == speaker and start - turns[-1].end < 1e-6:
                turns[-1] = Turn(turns[-1].start, end, speaker)
            else:
                turns.append(Turn(start, end, speaker))
    return turns


def cluster(vectors: np.ndarray, speakers: int | None = None, min_speakers: int | None = None,
            max_speakers: int | None = None) -> np.ndarray:
    """A cluster index for each print (unit vectors), `speakers` clusters exactly when given."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, int)
    if speakers is not None:
        low = high = min(speakers, n)
    else:
        low, high = min(min_speakers or 1, n), min(max_speakers or max(MAX_ESTIMATED, min_speakers or 1), n)
    if n == 1 or high == 1:
        return np.zeros(n, int)
    if n > MAX_TREE:  # the tree of an even sample; `_refined` gives every print its nearest centre
        sample = np.linspace(0, n - 1, MAX_TREE).round().astype(int)
        centres = _centres(vectors[sample], cluster(vectors[sample], speakers, min_speakers, max_speakers))
        return _refined(vectors, np.argmax(vectors @ centres.T, axis=1), keep=min(low, len(centres)))
    merges = average_linkage(vectors)
    heights = np.sort(merges[:, 2])[::-1]  # heights[k - 2]: the distance of the merge that brings k clusters down to k - 1
    if low == high:
        return _refined(vectors, cut(merges, n, low), keep=low)
    if low == 1 and heights[0] < SAME_VOICE:
        return np.zeros(n, int)
    best, count = -1.0, max(low, 2)
    for k in range(max(low, 2), high + 1):
        sizes = np.bincount(cut(merges, n, k))
        if sizes.min() < max(MIN_PRINTS, MIN_SHARE * n) and k > low:
            continue
        jump = heights[k - 2] - (heights[k - 1] if k - 1 < len(heights) else 0.0)
        if jump > best:
            best, count = jump, k
    return _refined(vectors, cut(merges, n, count), keep=low)


def average_linkage(vectors: np.ndarray) -> np.ndarray:
    """Bottom-up clustering on cosine distance, each merge at the mean distance between the two clusters'
    members: (a, b, distance) per merge, in the order made (the nearest-neighbour chain; scipy's `linkage`
    gives the same tree, but importing scipy cost a third of a second of every run)."""
    n = len(vectors)
    distance = 1.0 - vectors.astype(np.float64) @ vectors.astype(np.float64).T
    np.fill_diagonal(distance, np.inf)
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    merges, chain = [], []
    while len(merges) < n - 1:
        if not chain:
            chain.append(int(np.argmax(alive)))  # any cluster still there
        a = chain[-1]
        b = int(np.argmin(distance[a]))
        if len(chain) > 1 and distance[a, chain[-2]] <= distance[a, b]:
            b = chain[-2]  # ties go back down the chain, or it could cycle
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            merges.append((a, b, distance[a, b]))
            joined = (size[a] * distance[a] + size[b] * distance[b]) / (size[a] + size[b])
            distance[a], distance[:, a] = joined, joined
            distance[a, a] = np.inf
            distance[b], distance[:, b] = np.inf, np.inf
            size[a] += size[b]
            alive[b] = False
        else:
            chain.append(b)
    return np.array(merges, dtype=np.float64).reshape(-1, 3)


def cut(merges: np.ndarray, n: int, k: int) -> np.ndarray:
    """The k clusters left when the tree's merges are made nearest first, up to the last k - 1:
    a cluster index per print, in order of each cluster's first print."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in merges[np.argsort(merges[:, 2], kind="stable")][: n - k]:
        parent[root(int(b))] = root(int(a))
    _, labels = np.unique([root(i) for i in range(n)], return_inverse=True)
    return labels


def _nearest(centres: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each time, the index of the nearest centre (sorted centres)."""
    right = np.clip(np.searchsorted(centres, times), 0, len(centres) - 1)
    left = np.clip(right - 1, 0, len(centres) - 1)
    return np.where(np.abs(times - centres[left]) <= np.abs(centres[right] - times), left, right)


def _refined(vectors: np.ndarray, labels: np.ndarray, keep: int) -> np.ndarray:
    """Each print moved to its nearest cluster centre, a few rounds; clusters below MIN_SHARE absorbed
    while more than `keep` remain."""
    labels = np.asarray(labels)
    for _ in range(_REFINE_ROUNDS):
        ids, sizes = np.unique(labels, return_counts=True)
        order = np.argsort(-sizes, kind="stable")
        kept = [ids[i] for j, i in enumerate(order) if j < keep or sizes[i] >= max(MIN_PRINTS, MIN_SHARE * len(labels))]
        labels = np.asarray(kept)[np.argmax(vectors @ _centres(vectors, labels, kept).T, axis=1)]
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def _centres(vectors: np.ndarray, labels: np.ndarray, clusters: Sequence[int] | None = None) -> np.ndarray:
    """Each cluster's mean print, unit length, in the order of `clusters` (default: every label, ascending)."""
    clusters = np.unique(labels) if clusters is None else clusters
    centres = np.stack([vectors[labels == c].mean(axis=0) for c in clusters])
    return centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-9)


def _names(prints: Voiceprints, labels: np.ndarray, known: dict[str, np.ndarray]) -> dict[int, str]:
    """S1, S2, ... by first appearance; a cluster matched one to one to a known speaker's reference takes its name."""
    first = {}
    for i in np.argsort(prints.times[:, 0], kind="stable"):
        first.setdefault(int(labels[i]), len(first) + 1)
    names = {label: f"S{n}" for label, n in first.items()}
    if known:
        clusters = sorted(names)
        people = list(known)
        similarity = _centres(prints.vectors, labels, clusters) @ np.stack([known[p] for p in people]).T
        # the closest pair first, then the closest of the rest: one name per cluster, one cluster per name
        for flat in np.argsort(-similarity, axis=None, kind="stable"):
            row, col = divmod(int(flat), len(people))
            if similarity[row, col] < KNOWN_VOICE:
                break
            if clusters[row] in names and people[col] not in names.values() and names[clusters[row]].startswith("S"):
                names[clusters[row]] = people[col]
    return names
