"""The bounded memory of what ``update`` last wrote (a guess; compare-and-set checks it)."""

from __future__ import annotations

import threading

from sharedstate.backends import Entry
from sharedstate.store import _LastWritten


def test_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    memory = _LastWritten(max_entries=3)
    for i in range(5):
        memory.remember(f"k{i}", Entry(b"v", i))
    kept = [memory.get(f"k{i}") for i in range(5)]
    assert kept == [None, None, Entry(b"v", 2), Entry(b"v", 3), Entry(b"v", 4)]
    memory.remember("k4", Entry(b"w", 5))  # replacing a key drops nothing
    assert memory.get("k2") == Entry(b"v", 2) and memory.get("k4") == Entry(b"w", 5)


def test_large_values_and_unknown_versions_are_forgotten() -> None:
    memory = _LastWritten(max_value_bytes=4)
    memory.remember("k", Entry(b"1234", 1))
    assert memory.get("k") == Entry(b"1234", 1)
    memory.remember("k", Entry(b"12345", 2))
    assert memory.get("k") is None
    memory.remember("n", Entry(7, 1))
    memory.remember("n", None)  # the backend could not say what version it wrote
    assert memory.get("n") is None


def test_threads_never_push_it_far_past_its_bound() -> None:
    memory = _LastWritten(max_entries=50)

    def fill(t: int) -> None:
        for i in range(2000):
            memory.remember(f"{t}-{i}", Entry(b"v", i))

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(memory._entries) <= 50 + len(threads)
