"""Values: every tagged type round-trips through every backend, and signed pickle is safe to read.

A pickle store refuses, before unpickling, any pickled value it did not sign for that very key. The
proof is a payload whose unpickling would create a marker file: the file must never appear (and a
control shows that unpickling it really would create the file).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import os
import pickle
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

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


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class Level(enum.IntEnum):
    HIGH = 2


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (MyStr("text"), "MyStr"),
        (MyInt(7), "MyInt"),
        (MyFloat(0.5), "MyFloat"),
        ({"deep": [MyStr("x")]}, r"MyStr at value\['deep'\]\[0\]"),
        (Level.HIGH, "enum"),
    ],
    ids=["str", "int", "float", "nested", "intenum"],
)
def test_subclasses_of_str_int_float_are_refused_not_stored_as_the_base_type(
    store: Store, value: Any, named: str
) -> None:
    """A subclass would read back as its base type, losing what it meant: refused, naming it."""
    store.set("s", "original")
    with pytest.raises(SerializationError, match=named) as info:
        store.set("s", value)
    assert "subclass" in str(info.value) or "enum" in str(info.value)
    assert store.get("s") == "original"
    store.set("b", True)  # bool is an int subclass that round-trips: it stays bool
    assert store.get("b") is True


def test_markup_round_trips_as_markup(store: Store) -> None:
    """Like Flask's own session serializer: Markup (anything with __html__) reads back as Markup."""

    class Widget:
        def __html__(self) -> str:
            return "<i>w</i>"

    value = {"msg": Markup("<b>hi</b>"), "list": [Markup("a &amp; b")], "widget": Widget()}
    store.set("m", value)
    got = store.get("m")
    assert got == {"msg": "<b>hi</b>", "list": ["a &amp; b"], "widget": "<i>w</i>"}
    for item in (got["msg"], got["list"][0], got["widget"]):
        assert type(item) is Markup
    assert str(Markup("x") + got["msg"]) == "x<b>hi</b>"  # still safe: not escaped again
    store.set("plain", "<b>hi</b>")
    assert type(store.get("plain")) is str  # a plain str with the same text stays plain
    store.set("lookalike", {"$markup": "<script>"})  # a user dict that looks like the tag
    assert store.get("lookalike") == {"$markup": "<script>"}


def test_markup_read_without_markupsafe_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    with Store(url) as store:
        store.set("m", Markup("<b>hi</b>"))
    code = (
        "import sys; sys.modules['markupsafe'] = None\n"  # as if markupsafe were not installed
        "from sharedstate import Store, SerializationError\n"
        f"store = Store({url!r})\n"
        "try:\n    store.get('m')\nexcept SerializationError as exc:\n    print('refused:', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "markupsafe" in out.stdout and "'m'" in out.stdout


def test_error_names_the_path_inside_the_users_value(store: Store) -> None:
    with pytest.raises(SerializationError) as info:
        store.set("k", {"items": [1, 2, 3, object()]})
    assert "object at value['items'][3] is not supported" in str(info.value)
    with pytest.raises(SerializationError, match=r"complex at value\[1\]\{item\}"):
        store.set("k", (1, {3j}))


def test_codec_paths_skip_a_callers_wrapper() -> None:
    """Callers that wrap the user's value (cache, sessions) name the user's path, not theirs."""
    codec = JSONCodec()
    with pytest.raises(SerializationError) as info:
        codec.dumps("k", {"v": {"items": [0, object()]}, "f": 1.0}, shown_as="result", inside=("v",))
    message = str(info.value)
    assert "at result['items'][1] is not supported" in message and "['v']" not in message
    with pytest.raises(SerializationError, match=r"at value\['v'\]\['items'\]\[1\]"):
        codec.dumps("k", {"v": {"items": [0, object()]}})  # the default: unchanged


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
    store.backend.set(store._keyspace.full_key("bad"), raw)
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
        full = store._keyspace.full_key("v")
        forged = [
            payload,  # a bare pickle, as an attacker with write access would store it
            b"!p1" + payload,  # our old marker, no signature
            b"!p1" + b"\x00" * 32 + payload,  # our old marker, a made-up signature
            b"!p1",
            b"!p2" + payload,  # our marker, no signature
            b"!p2" + b"\x00" * 32 + payload,  # our marker, a made-up signature
            b"!p2",
            b"!p9" + b"\x00" * 32 + payload,  # a format this version does not know
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
        entry = store.backend.get(store._keyspace.full_key("a"))
        assert entry is not None
        store.backend.set(store._keyspace.full_key("b"), entry.value)
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


def test_signed_pickle_cannot_be_moved_across_a_nul_in_the_key(
    shared_url: str, namespace: str, tmp_path: Path
) -> None:
    """The forgery: a value the app signed under a key the attacker partly chose,
    ``"user:alice\\0<opcodes>"``, moved by someone with write access to the backend to
    ``"user:alice"`` with the opcodes in front of the payload. With a NUL-joined signature the
    bytes signed are the same, so it verified and ``pickle.loads`` ran the opcodes."""
    marker = tmp_path / "pwned"
    opcodes = pickle.dumps(Payload(str(marker)), protocol=0)  # ASCII, no NUL: fits in a key
    assert b"\0" not in opcodes and opcodes.isascii()
    secret = "s3cret"
    with Store(shared_url, namespace=namespace, serializer="pickle", secret_key=secret) as store:
        victim = store._keyspace.full_key("user:alice")
        chosen = victim + "\0" + opcodes.decode("ascii")
        # What the app's codec signs for that key (the store itself now refuses such keys,
        # below; values written before this fix, or signed another way, must not move either).
        signed = SignedPickleCodec(secret).dumps(chosen, {"name": "alice"})
        assert isinstance(signed, bytes)
        mark, mac, payload = signed[:3], signed[3:35], signed[35:]
        # The attacker, with write access only: moves the MAC and shifts the key's tail into
        # the payload. pickle.loads stops at the opcodes' STOP and ignores what follows.
        store.backend.set(victim, mark + mac + opcodes + b"\0" + payload)
        with pytest.raises(SerializationError, match="signature"):
            store.get("user:alice")
        assert not marker.exists()
        # And the app no longer signs anything under a key holding NUL.
        with pytest.raises(ValueError, match="NUL") as info:
            store.set("user:alice\0" + opcodes.decode("ascii"), {"name": "alice"})
        assert repr("user:alice\0")[:-1] in str(info.value)  # the message names the key


def test_pickle_signed_in_the_old_format_is_refused_clearly(shared_url: str, namespace: str) -> None:
    """``!p1`` values (HMAC over key + NUL + payload) cannot be told from a forgery: refused."""
    secret = b"s3cret"
    with Store(shared_url, namespace=namespace, serializer="pickle", secret_key=secret) as store:
        full = store._keyspace.full_key("old")
        payload = pickle.dumps(Custom(1))
        mac = hmac.new(secret, full.encode() + b"\0" + payload, hashlib.sha256).digest()
        store.backend.set(full, b"!p1" + mac + payload)
        with pytest.raises(SerializationError, match=r"old signed format.*Store the value again"):
            store.get("old")
        store.set("old", Custom(1))  # storing it again rewrites it in the current format
        assert store.get("old") == Custom(1)
        entry = store.backend.get(full)
        assert entry is not None and isinstance(entry.value, bytes) and entry.value.startswith(b"!p2")


@pytest.mark.parametrize("value", ["a\ud800", {"k": ["\udfff"]}, {("x", "\ud800")}, {"\ud800": 1}])
def test_lone_surrogates_in_values_are_a_serialization_error(value: object) -> None:
    with pytest.raises(SerializationError, match="lone surrogate") as caught:
        JSONCodec().dumps("k", value)
    assert "'k'" in str(caught.value)
