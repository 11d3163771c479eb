"""sqlite:// on a disk that fills up: a clear error that says nothing was applied, nothing
acknowledged lost, an intact database, and the same store working again once space is freed.

The disk is a real, small tmpfs mounted for the test (root only; skipped elsewhere, saying why).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharedstate import BackendUnavailableError, Store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_refuses_writes_clearly_and_recovers(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(os.urandom(256 * 1024))  # freed later, to show recovery
    path = small_disk / "state.sqlite3"
    store = Store(f"sqlite:///{path}", namespace=f"full{uuid.uuid4().hex[:6]}")
    counter = store.counter("n")
    acknowledged: dict[str, str] = {}
    counted = 0
    with pytest.raises(BackendUnavailableError) as caught:
        for i in range(10_000):
            value = f"{i}:" + "x" * 2000
            store.set(f"k{i}", value)
            acknowledged[f"k{i}"] = value
            counter.incr()
            counted += 1
    assert caught.value.applied is False
    assert str(path) in str(caught.value) and "full" in str(caught.value)
    assert len(acknowledged) > 10  # the disk filled up after real writes, not at once

    filler.unlink()
    # Everything acknowledged is there, from this store and from a new one.
    assert counter.get() == counted
    for key, value in acknowledged.items():
        assert store.get(key) == value
    assert counter.incr() == counted + 1  # the same store writes again
    store.close()
    with Store(f"sqlite:///{path}", namespace=store.namespace) as again:
        assert again.counter("n").get() == counted + 1
        assert len(again.keys("k")) == len(acknowledged)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
