"""Turning Python values into what backends store, and back.

The default :class:`JSONCodec` writes JSON with tags for the types JSON lacks (datetime, date, UUID,
Decimal, bytes, tuple, set, frozenset), each read back as the same type. A tagged value is a one-key
object whose key starts with ``$`` (``{"$uuid": "..."}``); a user dict that happens to look like that
is escaped as ``{"$dict": [[key, value]]}``, so every dict round-trips.

Integers in the signed 64-bit range are handed to the backend as native integers, which is what
``incr`` works on, so ``store.set("n", 5)`` followed by ``store.incr("n")`` gives 6 on every backend.

:class:`SignedPickleCodec` exists for values JSON cannot hold. It is used only when the store is given
a secret key: each pickled value is HMAC-signed together with its key, and a value that fails the
check is refused before ``pickle.loads`` ever sees it, so whoever can write to the backend still
cannot run code in the app, nor move a signed value to another key.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import json
import pickle
import uuid
from decimal import Decimal
from typing import Any, Protocol

from sharedstate.backends.base import RawValue
from sharedstate.errors import SerializationError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PICKLE_MARK = b"!p1"  # cannot start a JSON document
# Every tagged or escaped object is encoded as an object whose first key starts with "$"; inside a
# JSON string the same characters would read '{\\"$', so their absence proves there is no tag.
_TAG_MARK = b'{"$'
_MAC_SIZE = hashlib.sha256().digest_size

SUPPORTED_TYPES = (
    "dict (str keys), list, str, int, float, bool, None, datetime, date, UUID, Decimal, bytes, "
    "tuple, set, frozenset"
)


class Codec(Protocol):
    """Encodes values for one store. ``key`` is the full key, used in errors and signatures."""

    def dumps(self, key: str, value: Any) -> RawValue: ...

    def loads(self, key: str, raw: RawValue) -> Any: ...


class _Unsupported(Exception):
    def __init__(self, path: str, value: object, why: str = "") -> None:
        self.path, self.value, self.why = path, value, why


def _encode(value: Any, path: str) -> Any:
    """Return a JSON-ready structure for ``value`` (exact types; subclasses only where lossless)."""
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if isinstance(value, enum.Enum):
        raise _Unsupported(path, value, "enums do not round-trip; store .value instead")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Unsupported(f"{path} key {k!r}", k, "dict keys must be str (JSON object keys)")
            out[k] = _encode(v, f"{path}[{k!r}]")
        if len(out) == 1 and next(iter(out)).startswith("$"):
            return {"$dict": [[k, v] for k, v in out.items()]}
        return out
    if kind is list:
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is tuple:
        return {"$tuple": [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if kind is set or kind is frozenset:
        tag = "$set" if kind is set else "$frozenset"
        return {tag: [_encode(v, f"{path}{{item}}") for v in value]}
    if kind is dt.datetime:
        return {"$datetime": value.isoformat()}
    if kind is dt.date:
        return {"$date": value.isoformat()}
    if kind is uuid.UUID:
        return {"$uuid": str(value)}
    if kind is Decimal:
        return {"$decimal": str(value)}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    # Subclasses of str/int/float (markupsafe.Markup, numpy-free int subclasses) store as the base
    # type; anything else is refused rather than stored lossily.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise _Unsupported(path, value)


def _decode_object(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    tag, payload = next(iter(obj.items()))
    if not tag.startswith("$"):
        return obj
    if tag == "$dict":
        return dict(payload)
    if tag == "$tuple":
        return tuple(payload)
    if tag == "$set":
        return set(payload)
    if tag == "$frozenset":
        return frozenset(payload)
    if tag == "$datetime":
        return dt.datetime.fromisoformat(payload)
    if tag == "$date":
        return dt.date.fromisoformat(payload)
    if tag == "$uuid":
        return uuid.UUID(payload)
    if tag == "$decimal":
        return Decimal(payload)
    if tag == "$bytes":
        return base64.b64decode(payload, validate=True)  # no silent skipping of bad characters
    return obj  # not one of ours (written by another tool): leave it as it is


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON as it is (exact types, str keys, no "$" one-key dict to escape).

    Most values are; checking without building a copy, then handing the value itself to the C
    encoder, is about three times faster than the tagging walk (set latency is a benchmark target).
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or not _is_plain(v):
                return False
        # A one-key dict whose key starts with "$" reads like a tag: the walk escapes it.
        return len(value) != 1 or not next(iter(value)).startswith("$")
    if kind is list:
        return all(_is_plain(v) for v in value)
    return False


# Built once: json.dumps/json.loads with options build a new encoder/decoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PLAIN_DECODER = json.JSONDecoder()
_TAGGED_DECODER = json.JSONDecoder(object_hook=_decode_object)


def _native_int(value: Any) -> bool:
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


class JSONCodec:
    """Tagged JSON; the default. Stateless and safe to share."""

    def dumps(self, key: str, value: Any) -> RawValue:
        if _native_int(value):
            return int(value)
        try:
            tree = value if _is_plain(value) else _encode(value, "value")
        except _Unsupported as exc:
            why = f" ({exc.why})" if exc.why else ""
            raise SerializationError(
                f"cannot store key {key!r}: {type(exc.value).__name__} at {exc.path} is not "
                f"supported{why}; supported types: {SUPPORTED_TYPES}"
            ) from None
        except RecursionError:
            raise SerializationError(
                f"cannot store key {key!r}: the value is nested too deeply or contains a cycle"
            ) from None
        return _ENCODER.encode(tree).encode("utf-8")

    def loads(self, key: str, raw: RawValue) -> Any:
        if isinstance(raw, int):
            return raw
        if raw.startswith(_PICKLE_MARK):
            raise SerializationError(
                f"key {key!r} holds a pickled value; open the store with serializer='pickle' and "
                "the secret key that wrote it"
            )
        try:
            # Prebuilt decoders on UTF-8 text: json.loads(bytes) spends half its time detecting
            # the encoding, which is always UTF-8 here (get latency is a benchmark target).
            text = raw.decode("utf-8")
            if _TAG_MARK not in raw:  # no tagged object inside: skip the per-object hook
                return _PLAIN_DECODER.decode(text)
            return _TAGGED_DECODER.decode(text)
        # ArithmeticError: decimal.InvalidOperation for a bad "$decimal"; RecursionError: JSON
        # nested deeper than Python can decode, written by some other tool.
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            raise SerializationError(
                f"key {key!r} holds data that is not valid: {type(exc).__name__}: {exc}"
            ) from None


class SignedPickleCodec:
    """Pickle, HMAC-SHA256-signed with a secret key over the key and the payload.

    Reading verifies the signature before unpickling; unsigned JSON values written by a
    :class:`JSONCodec` store are still read (JSON cannot run code).
    """

    def __init__(self, secret_key: str | bytes) -> None:
        if not secret_key:
            raise ValueError("serializer='pickle' needs a non-empty secret_key")
        self._secret = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
        self._json = JSONCodec()

    def _mac(self, key: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, key.encode() + b"\0" + payload, hashlib.sha256).digest()

    def dumps(self, key: str, value: Any) -> RawValue:
        if _native_int(value):
            return int(value)
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(
                f"cannot store key {key!r}: {type(value).__name__} cannot be pickled: {exc}"
            ) from None
        return _PICKLE_MARK + self._mac(key, payload) + payload

    def loads(self, key: str, raw: RawValue) -> Any:
        if isinstance(raw, int) or not raw.startswith(_PICKLE_MARK):
            return self._json.loads(key, raw)
        start = len(_PICKLE_MARK)
        mac, payload = raw[start : start + _MAC_SIZE], raw[start + _MAC_SIZE :]
        if not hmac.compare_digest(mac, self._mac(key, payload)):
            raise SerializationError(
                f"key {key!r} holds a pickled value whose signature does not match; refusing to "
                "unpickle it (written by someone without the secret key, or moved from another key)"
            )
        return pickle.loads(payload)


def make_codec(serializer: str, secret_key: str | bytes | None) -> Codec:
    """The codec for a store's ``serializer`` option (``"json"`` or ``"pickle"``)."""
    if serializer == "json":
        return JSONCodec()
    if serializer == "pickle":
        if not secret_key:
            raise ValueError(
                "serializer='pickle' requires secret_key: unsigned pickles would let anyone who can "
                "write to the backend run code in your app"
            )
        return SignedPickleCodec(secret_key)
    raise ValueError(f"unknown serializer {serializer!r}; use 'json' (default) or 'pickle'")
