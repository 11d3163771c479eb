"""Values: every tagged type round-trips through every backend, and signed pickle is safe to read.

A pickle store refuses, before unpickling, any pickled value it did not sign for that very key. The
proof is a payload whose unpickling would create a marker file: the file must never appear (and a
control shows that unpickling it really would create the file).
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sharedstate import SerializationError, Store
from sharedstate.codecs import JSONCodec, SignedPickleCodec, make_codec

SAMPLES: dict[str, Any] = {
    "datetime_naive": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    "datetime_utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    "datetime_offset": dt.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))
    ),
    "date": dt.date(1999, 12, 31),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": Decimal("1234567890.123456789012345678901234567890"),
    "decimal_trailing_zero": Decimal("1.10"),
    "decimal_negative_exp": Decimal("-1E-30"),
    "bytes": b"\x00\xff binary \x80",
    "bytes_empty": b"",
    "tuple": (1, "a", None),
    "tuple_empty": (),
    "set": {1, 2, 3},
    "set_empty": set(),
    "frozenset": frozenset({"a", "b"}),
    "unicode": "héllo wörld ✓ 𝄞 \x00 nul",
    "float": 0.1,
    "float_big": 1e308,
    "big_int": 2**64,
    "big_negative_int": -(2**100),
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "just_over_int64": 2**63,
    "bool": True,
    "none": None,
    "nested": {
        "when": [dt.date(2020, 1, 1), (dt.datetime(2020, 1, 1, 12), {uuid.UUID(int=1)})],
        "sets": {"s": {(1, 2), (3, 4)}, "f": frozenset({frozenset({1})})},
        "deep": [[[[{"x": (Decimal("0.5"), b"\x01")}]]]],
    },
    # user dicts that look like the codec's tags must come back as the same dicts
    "tag_like_date": {"$date": "x"},
    "tag_like_dict": {"$dict": [["a", 1]]},
    "tag_like_tuple": {"$tuple": [1, 2]},
    "tag_like_nested": {"$set": {"$bytes": "AA=="}},
    "tag_like_unknown": {"$foo": 1},
    "tag_like_in_list": [{"$uuid": "not-a-uuid"}],
    "dollar_keys_two": {"$date": "x", "$uuid": "y"},
    "dollar_only": {"$": None},
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_through_backend(store: Store, name: str) -> None:
    value = SAMPLES[name]
    store.set("v", value)
    got = store.get("v")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, dt.datetime):
        assert got.tzinfo == value.tzinfo and got.utcoffset() == value.utcoffset()
    if isinstance(value, Decimal):
        assert str(got) == str(value)  # same digits and exponent, not only equal


def test_types_nested_in_containers_keep_their_types(store: Store) -> None:
    value = {"t": (1, (2, [3])), "l": [(1,), {2}], "b": [b"x"]}
    store.set("v", value)
    got = store.get("v")
    assert got == value
    assert type(got["t"]) is tuple and type(got["t"][1]) is tuple and type(got["t"][1][1]) is list
    assert type(got["l"][0]) is tuple and type(got["l"][1]) is set


def test_round_trip_through_objects(store: Store) -> None:
    d = store.dict("d")
    d["when"] = dt.date(2024, 5, 6)
    assert d["when"] == dt.date(2024, 5, 6)
    assert store.update("u", lambda v: v | {3}, default={1, 2}) == {1, 2, 3}
    assert store.get("u") == {1, 2, 3}
    with store.edit("e", default={"ids": []}) as obj:
        obj["ids"].append(uuid.UUID(int=7))
    assert store.get("e") == {"ids": [uuid.UUID(int=7)]}


def test_ints_are_native_and_big_ints_are_not() -> None:
    codec = JSONCodec()
    for n in (0, 5, -5, 2**63 - 1, -(2**63)):
        raw = codec.dumps("k", n)
        assert type(raw) is int and raw == n
    for n in (2**63, -(2**63) - 1, 2**200):
        raw = codec.dumps("k", n)
        assert isinstance(raw, bytes) and codec.loads("k", raw) == n
    assert codec.dumps("k", True) == b"true"  # bool is not an int here
    assert codec.loads("k", b"42") == 42  # an integer a backend hands back as text


def test_big_int_round_trip_and_incr(store: Store) -> None:
    store.set("big", 2**64)
    assert store.get("big") == 2**64
    with pytest.raises((TypeError, OverflowError)):
        store.incr("big")  # beyond a native 64-bit integer: not a counter
    assert store.get("big") == 2**64


def test_int_subclass_and_str_subclass_store_as_base_type(store: Store) -> None:
    class MyStr(str):
        pass

    class MyInt(int):
        pass

    store.set("s", MyStr("text"))
    store.set("i", MyInt(7))
    assert store.get("s") == "text" and type(store.get("s")) is str
    assert store.get("i") == 7 and type(store.get("i")) is int


# -- corrupt data on read --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b'{"$decimal": "abc"}',
        b'{"$date": "not a date"}',
        b'{"$datetime": 5}',
        b'{"$uuid": "zzz"}',
        b'{"$bytes": "!!!"}',
        b'{"$tuple": 5}',
        b'{"$set": [[1]]}',
        b'{"$dict": 3}',
        b"[" * 100_000,
    ],
    ids=lambda r: r[:20].decode("latin-1"),
)
def test_corrupt_stored_data_raises_serialization_error(store: Store, raw: bytes) -> None:
    store.backend.set(store.full_key("bad"), raw)
    with pytest.raises(SerializationError, match="bad"):
        store.get("bad")


# -- signed pickle ---------------------------------------------------------------------------


class Payload:
    """Unpickling this creates the directory ``path``: proof that ``pickle.loads`` ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


class Custom:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.x == self.x

    def __hash__(self) -> int:
        return self.x


def test_payload_control(tmp_path: Path) -> None:
    """The malicious payload does create its marker when unpickled, so the tests below can fail."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(str(marker))))
    assert marker.exists()


def test_pickle_round_trip(store_url: str, namespace: str) -> None:
    with Store(store_url, namespace=namespace, serializer="pickle", secret_key="s3cret") as store:
        store.set("obj", Custom(3))
        assert store.get("obj") == Custom(3)
        store.set("mixed", {"c": [Custom(1)], "n": complex(1, 2)})
        assert store.get("mixed") == {"c": [Custom(1)], "n": complex(1, 2)}
        store.set("n", 5)
        assert store.incr("n") == 6  # ints stay native with pickle too
        with pytest.raises(SerializationError, match="lam"):
            store.set("lam", lambda: None)  # not picklable
        assert store.get("lam") is None


def test_pickle_from_another_key_holder_is_refused(shared_url: str, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with (
        Store(shared_url, namespace=namespace, serializer="pickle", secret_key="right") as mine,
        Store(shared_url, namespace=namespace, serializer="pickle", secret_key="wrong") as theirs,
    ):
        theirs.set("v", Payload(str(marker)))
        assert not marker.exists()
        with pytest.raises(SerializationError, match="signature"):
            mine.get("v")
        assert not marker.exists()


def test_unsigned_or_forged_pickle_is_refused(store_url: str, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(str(marker)))
    with Store(store_url, namespace=namespace, serializer="pickle", secret_key="right") as store:
        full = store.full_key("v")
        forged = [
            payload,  # a bare pickle, as an attacker with write access would store it
            b"!p1" + payload,  # our marker, no signature
            b"!p1" + b"\x00" * 32 + payload,  # our marker, a made-up signature
            b"!p1",
        ]
        for raw in forged:
            store.backend.set(full, raw)
            with pytest.raises(SerializationError):
                store.get("v")
        assert not marker.exists()


def test_signed_pickle_moved_to_another_key_is_refused(
    store_url: str, namespace: str, tmp_path: Path
) -> None:
    with Store(store_url, namespace=namespace, serializer="pickle", secret_key="right") as store:
        store.set("a", Custom(1))
        entry = store.backend.get(store.full_key("a"))
        assert entry is not None
        store.backend.set(store.full_key("b"), entry.value)
        with pytest.raises(SerializationError, match="signature"):
            store.get("b")
        assert store.get("a") == Custom(1)


def test_json_store_refuses_pickles_pickle_store_reads_json(shared_url: str, namespace: str) -> None:
    with (
        Store(shared_url, namespace=namespace) as plain,
        Store(shared_url, namespace=namespace, serializer="pickle", secret_key="k") as pickled,
    ):
        pickled.set("p", Custom(1))
        with pytest.raises(SerializationError, match="pickle"):
            plain.get("p")
        plain.set("j", {"x": (1, 2)})
        assert pickled.get("j") == {"x": (1, 2)}


def test_pickle_needs_a_secret_key() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        Store("memory://", serializer="pickle")
    with pytest.raises(ValueError, match="secret_key"):
        Store("memory://", serializer="pickle", secret_key="")
    with pytest.raises(ValueError):
        SignedPickleCodec(b"")
    with pytest.raises(ValueError, match="serializer"):
        Store("memory://", serializer="yaml")
    assert isinstance(make_codec("pickle", b"bytes key"), SignedPickleCodec)
