"""An input's fingerprint (run_record.file_digest): sha256 of the file, computed once
per file version in a process, and a new one when the file changes."""

from __future__ import annotations

import hashlib
import os

from ficklenet.tasks.run_record import _digest, file_digest


def test_a_digest_is_the_files_sha256_and_follows_its_changes(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"weights one")
    assert file_digest(path) == hashlib.sha256(b"weights one").hexdigest()
    hits = _digest.cache_info().hits
    assert file_digest(path) == hashlib.sha256(b"weights one").hexdigest()
    assert _digest.cache_info().hits == hits + 1  # read once
    path.write_bytes(b"weights two, longer")  # another size and time: read again
    assert file_digest(path) == hashlib.sha256(b"weights two, longer").hexdigest()
    path.write_bytes(b"weights 3, longer..")  # the same size: the time tells
    os.utime(path, ns=(1, 10**18))
    assert file_digest(path) == hashlib.sha256(b"weights 3, longer..").hexdigest()
