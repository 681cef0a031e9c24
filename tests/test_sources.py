"""Where audio may come from, as a pure unit: paths, roots, schemes and S3 URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from murmur.workers.cpu.sources import check_source, local_file
from murmur.workers.errors import AudioError, ForbiddenError


@pytest.mark.parametrize("source, reason", [
    ("", "names no source"),
    (None, "names no source"),
    (42, "names no source"),
    ("talk.mp3", "is relative: workers need an absolute path"),
    ("./data/talk.mp3", "is relative"),
    ("http://example.org/talk.mp3", "unsupported source"),
    ("file:///data/talk.mp3", "unsupported source"),
    ("gs://bucket/talk.mp3", "unsupported source"),
    ("s3://", "invalid S3 URI"),
    ("s3://bucket", "invalid S3 URI"),
    ("s3://bucket/", "invalid S3 URI"),
    ("s3:///key.mp3", "invalid S3 URI"),
])
def test_refused_sources(source, reason):
    with pytest.raises(AudioError, match=reason):
        check_source(source, allowed_roots=())


def test_allowed_roots_fence_local_paths(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    roots = (inside.resolve(),)
    check_source(str(inside / "talk.mp3"), allowed_roots=roots)  # need not exist yet: decoding says so
    with pytest.raises(ForbiddenError, match="outside MURMUR_ALLOWED_ROOTS"):
        check_source(str(outside / "talk.mp3"), allowed_roots=roots)
    with pytest.raises(ForbiddenError, match="outside MURMUR_ALLOWED_ROOTS"):
        check_source(str(inside / ".." / "out" / "talk.mp3"), allowed_roots=roots)  # no escape through '..'
    (inside / "link.mp3").symlink_to(outside / "talk.mp3")
    with pytest.raises(ForbiddenError, match="outside MURMUR_ALLOWED_ROOTS"):
        check_source(str(inside / "link.mp3"), allowed_roots=roots)  # nor through a link
    check_source("s3://bucket/key.mp3", allowed_roots=roots)  # roots fence local paths only
    check_source(str(outside / "talk.mp3"), allowed_roots=())  # no roots: any absolute path


def test_a_local_file_is_read_in_place(tmp_path):
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF")
    with local_file(str(path), allowed_roots=()) as local:
        assert Path(local) == path


def test_the_file_opened_is_the_one_checked(tmp_path):
    """A path through a link inside the roots is opened where the link pointed when it was checked: the
    link swapped afterwards (to a file outside) changes nothing for this job."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "real" / "talk.wav").write_bytes(b"RIFF")
    (outside / "talk.wav").write_bytes(b"SECRET")
    (root / "link").symlink_to(root / "real")
    with local_file(str(root / "link" / "talk.wav"), allowed_roots=(root.resolve(),)) as path:
        (root / "link").unlink()
        (root / "link").symlink_to(outside)  # swapped between the check and the read
        assert Path(path).read_bytes() == b"RIFF" and Path(path) == (root / "real" / "talk.wav").resolve()
