"""Turning Python values into what backends store, and back.

The default :class:`JSONCodec` writes JSON with tags for the types JSON lacks (datetime, date, UUID,
Decimal, bytes, tuple, set, frozenset, and ``markupsafe.Markup``), each read back as the same type.
A tagged value is a one-key object whose key starts with ``$`` (``{"$uuid": "..."}``); a user dict
that happens to look like that is escaped as ``{"$dict": [[key, value]]}``, so every dict
round-trips.

Types are exact: a value is stored only if it reads back as the same type. Any object with an
``__html__`` method (``markupsafe.Markup``, as Flask's own session serializer does) is stored as
its HTML and reads back as ``markupsafe.Markup`` (reading needs markupsafe, which Flask installs).
Every other subclass of ``str``, ``int`` or ``float`` (a ``str`` subclass, ``numpy.float64``) is
refused with a :class:`~sharedstate.errors.SerializationError` naming its type, rather than
silently read back as the base type; pass ``str(x)``, ``int(x)`` or ``float(x)``. Enums are refused
too (store ``.value``); ``bool`` stays ``bool``. Subclasses of ``dict`` (``OrderedDict``,
``defaultdict``) are stored as, and read back as, plain dicts.

Integers in the signed 64-bit range are handed to the backend as native integers, which is what
``incr`` works on, so ``store.set("n", 5)`` followed by ``store.incr("n")`` gives 6 on every backend.

:class:`SignedPickleCodec` exists for values JSON cannot hold. It is used only when the store is given
a secret key: each pickled value is HMAC-signed together with its key, and a value that fails the
check is refused before ``pickle.loads`` ever sees it, so whoever can write to the backend still
cannot run code in the app, nor move a signed value to another key. The signature covers the key's
length, the key and the payload (format ``!p2``), so no split of one signed key-and-payload into
another key and payload verifies. Values signed in the earlier format (``!p1``, key and payload
joined by a NUL, which keys could contain) are refused with a message saying to store them again.
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sharedstate.backends.base import RawValue
from sharedstate.backends.kit import fits_int64 as _native_int  # what backends store as a native integer
from sharedstate.errors import SerializationError

if TYPE_CHECKING:
    import json
    import pickle

    class UnpicklableValueError(SerializationError, pickle.PickleError):
        """A value the pickle serializer cannot pickle; nothing was written."""

# json, uuid, decimal, base64, hashlib, hmac and pickle are imported where they are first needed,
# not with the package (``import sharedstate`` is part of every worker's start; see
# tests/test_import_cost.py). A value can only be a UUID or a Decimal if its module was imported.

# "!p" cannot start a JSON document. "!p2": HMAC over len(key) + key + payload. "!p1" (refused):
# HMAC over key + NUL + payload, ambiguous when the signed key held a NUL.
_PICKLE_PREFIX = b"!p"
_PICKLE_MARK = b"!p2"
_OLD_PICKLE_MARK = b"!p1"
# Every tagged or escaped object is encoded as an object whose first key starts with "$"; inside a
# JSON string the same characters would read '{\\"$', so their absence proves there is no tag.
_TAG_MARK = b'{"$'
_MAC_SIZE = 32  # HMAC-SHA256

SUPPORTED_TYPES = (
    "dict (str keys), list, str, int, float, bool, None, datetime, date, UUID, Decimal, bytes, "
    "tuple, set, frozenset, markupsafe.Markup"
)


class Codec(Protocol):
    """Encodes values for one store. ``key`` is the full key, used in errors and signatures.

    ``dumps``'s keyword arguments only shape error messages, for callers that wrap the user's value
    before storing it: ``inside`` is the path of dict keys from the stored value to the user's
    (``("v",)`` for the cache's ``{"v": result}``), and ``shown_as`` what the message calls the
    user's value, so a failure reads ``result['items'][3]``, not ``value['v']['items'][3]``.
    """

    def dumps(
        self, key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> RawValue: ...

    def loads(self, key: str, raw: RawValue) -> Any: ...


class _Unsupported(Exception):
    """``value`` cannot be encoded. ``steps`` is its path, innermost step first: each container
    adds its own on the way out, so encoding a supported value builds no path strings at all."""

    def __init__(self, value: object, why: str = "", step: str | None = None) -> None:
        self.value, self.why = value, why
        self.steps: list[str] = [] if step is None else [step]

    def where(self, shown_as: str, inside: tuple[str, ...]) -> str:
        """The path of the failing value as the user knows it (``inside`` stripped)."""
        steps = self.steps[::-1]
        wrapper = [f"[{k!r}]" for k in inside]
        if steps[: len(wrapper)] == wrapper:
            steps = steps[len(wrapper) :]
        return shown_as + "".join(steps)


def _encode(value: Any) -> Any:
    """Return a JSON-ready structure for ``value``: exact types only, see the module docstring."""
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if isinstance(value, enum.Enum):
        raise _Unsupported(value, "enums do not round-trip; store .value instead")
    # Containers add their step to the path of a failure on its way out (one frame per level, so
    # the nesting depth Python allows is not halved by a helper).
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Unsupported(k, "dict keys must be str (JSON object keys)", step=f" key {k!r}")
            try:
                out[k] = _encode(v)
            except _Unsupported as exc:
                exc.steps.append(f"[{k!r}]")
                raise
        if len(out) == 1 and next(iter(out)).startswith("$"):
            return {"$dict": [[k, v] for k, v in out.items()]}
        return out
    if kind is list or kind is tuple:
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_encode(v))
            except _Unsupported as exc:
                exc.steps.append(f"[{i}]")
                raise
        return items if kind is list else {"$tuple": items}
    if kind is set or kind is frozenset:
        try:
            members = [_encode(v) for v in value]
        except _Unsupported as exc:
            exc.steps.append("{item}")
            raise
        return {"$set" if kind is set else "$frozenset": members}
    if kind is dt.datetime:
        return {"$datetime": value.isoformat()}
    if kind is dt.date:
        return {"$date": value.isoformat()}
    if kind is bytes:
        import base64

        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is getattr(sys.modules.get("uuid"), "UUID", None):
        return {"$uuid": str(value)}
    if kind is getattr(sys.modules.get("decimal"), "Decimal", None):
        return {"$decimal": str(value)}
    html = getattr(value, "__html__", None)
    if callable(html):  # markupsafe.Markup and friends, as Flask's session serializer keeps them
        return {"$markup": str(html())}
    for base in (str, int, float):
        if isinstance(value, base):
            # Stored as the base type it would read back as something else: refuse, never lose
            # the type silently (a str subclass may carry meaning, like Markup's "already safe").
            name = base.__name__
            why = f"a subclass of {name} would read back as a plain {name}; store {name}(x) instead"
            raise _Unsupported(value, why)
    raise _Unsupported(value)


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
        import uuid

        return uuid.UUID(payload)
    if tag == "$decimal":
        from decimal import Decimal

        return Decimal(payload)
    if tag == "$bytes":
        import base64

        return base64.b64decode(payload, validate=True)  # no silent skipping of bad characters
    if tag == "$markup":
        return _markup(payload)
    return obj  # not one of ours (written by another tool): leave it as it is


class _NeedsMarkupsafe(Exception):
    """A stored Markup value, read where markupsafe is not installed."""


def _markup(payload: Any) -> Any:
    if not isinstance(payload, str):
        raise TypeError(f"$markup holds a {type(payload).__name__}, not text")
    try:
        from markupsafe import Markup
    except ImportError:
        raise _NeedsMarkupsafe from None
    return Markup(payload)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON as it is (exact types, str keys, no "$" one-key dict to escape).

    Most values are; checking without building a copy, then handing the value itself to the C
    encoder, is about three times faster than the tagging walk (set latency is a benchmark target).
    Scalars inside containers are checked in the loop, without a call each.
    """
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            t = type(v)
            if t is str or t is int or t is float or t is bool or v is None:
                continue
            if not _is_plain(v):
                return False
        # A one-key dict whose key starts with "$" reads like a tag: the walk escapes it.
        return len(value) != 1 or not next(iter(value)).startswith("$")
    if kind is list:
        for v in value:
            t = type(v)
            if t is str or t is int or t is float or t is bool or v is None:
                continue
            if not _is_plain(v):
                return False
        return True
    return kind is str or kind is int or kind is float or kind is bool or value is None


# Built once, by the first JSONCodec: json.dumps/json.loads with options build a new
# encoder/decoder on every call.
_JSON: tuple[Callable[[Any], str], json.JSONDecoder, json.JSONDecoder] | None = None


def _json_coders() -> tuple[Callable[[Any], str], json.JSONDecoder, json.JSONDecoder]:
    global _JSON
    if _JSON is None:
        import json

        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
        _JSON = (_one_shot_encode(encoder), json.JSONDecoder(), json.JSONDecoder(object_hook=_decode_object))
    return _JSON


def _one_shot_encode(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, minus the C encoder it builds on every call: built here once.

    Without circular-reference markers: what reaches it went through ``_is_plain`` or ``_encode``
    first, which fail on a cycle (RecursionError) before. Falls back to ``encoder.encode`` where
    the C encoder is missing or takes other arguments than CPython 3.10-3.13's.
    """
    from json import encoder as module

    make = getattr(module, "c_make_encoder", None)
    escape = getattr(module, "c_encode_basestring", None)
    if make is None or escape is None:
        return encoder.encode
    try:
        one_shot = make(None, encoder.default, escape, None, ":", ",", False, False, True)
        probe = {"a": [1, 2.5, "é\n", None, True, {"b": -0.0}], "c": 10**30}
        if "".join(one_shot(probe, 0)) != encoder.encode(probe):
            return encoder.encode
    except Exception:  # another Python's C encoder: the public way
        return encoder.encode

    def encode(value: Any) -> str:
        return "".join(one_shot(value, 0))

    return encode


class JSONCodec:
    """Tagged JSON; the default. Stateless and safe to share."""

    def __init__(self) -> None:
        self._encode, plain, tagged = _json_coders()
        self._decode_plain = plain.decode
        self._decode_tagged = tagged.decode
        # The C scanner alone: decode() also runs two whitespace regexes in Python, for text this
        # codec writes without any (anything else falls back to decode(), errors included).
        self._scan_plain: Any = plain.scan_once  # type: ignore[attr-defined]

    def dumps(
        self, key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> RawValue:
        if _native_int(value):
            return int(value)
        try:
            tree = value if _is_plain(value) else _encode(value)
        except _Unsupported as exc:
            why = f" ({exc.why})" if exc.why else ""
            raise SerializationError(
                f"cannot store key {key!r}: {_type_name(exc.value)} at {exc.where(shown_as, inside)} "
                f"is not supported{why}; supported types: {SUPPORTED_TYPES}"
            ) from None
        except RecursionError:
            raise SerializationError(
                f"cannot store key {key!r}: the value is nested too deeply or contains a cycle"
            ) from None
        text = self._encode(tree)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"cannot store key {key!r}: a str in {shown_as} holds the lone surrogate "
                f"{text[exc.start : exc.end]!r}, which is not valid UTF-8 text (decode bytes with "
                "errors='replace', or store them as bytes)"
            ) from None

    def loads(self, key: str, raw: RawValue) -> Any:
        if isinstance(raw, int):
            return raw
        if raw.startswith(_PICKLE_PREFIX):
            raise SerializationError(
                f"key {key!r} holds a pickled value; open the store with serializer='pickle' and "
                "the secret key that wrote it"
            )
        try:
            # Prebuilt decoders on UTF-8 text: json.loads(bytes) spends half its time detecting
            # the encoding, which is always UTF-8 here (get latency is a benchmark target).
            text = raw.decode("utf-8")
            if _TAG_MARK not in raw:  # no tagged object inside: skip the per-object hook
                try:
                    value, end = self._scan_plain(text, 0)
                    if end == len(text):
                        return value
                except StopIteration:  # not JSON here: decode() says why
                    pass
                return self._decode_plain(text)
            return self._decode_tagged(text)
        except _NeedsMarkupsafe:
            raise SerializationError(
                f"key {key!r} holds a markupsafe.Markup value, and markupsafe is not installed "
                "(pip install markupsafe; Flask installs it)"
            ) from None
        # ArithmeticError: decimal.InvalidOperation for a bad "$decimal"; RecursionError: JSON
        # nested deeper than Python can decode, written by some other tool.
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            raise SerializationError(
                f"key {key!r} holds data that is not valid: {type(exc).__name__}: {exc}"
            ) from None


def _type_name(value: object) -> str:
    """The type's name, with its module when it is not a builtin (``markupsafe.Markup``)."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class SignedPickleCodec:
    """Pickle, HMAC-SHA256-signed with a secret key over the key and the payload.

    Reading verifies the signature before unpickling; unsigned JSON values written by a
    :class:`JSONCodec` store are still read (JSON cannot run code). The signed message is the
    key's length (8 bytes), the key and the payload, so it binds the key unambiguously.
    """

    def __init__(self, secret_key: str | bytes) -> None:
        if not secret_key:
            raise ValueError("serializer='pickle' needs a non-empty secret_key")
        self._secret = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
        self._json = JSONCodec()

    def _mac(self, key: str, payload: bytes) -> bytes:
        # Length-prefixed: with a separator instead, a key holding the separator could be split
        # differently, and a value signed for "a\0<opcodes>" would verify at "a" with the opcodes
        # in front of its payload. "surrogatepass": never fail on a key (stores validate keys).
        import hashlib
        import hmac

        key_bytes = key.encode("utf-8", "surrogatepass")
        message = len(key_bytes).to_bytes(8, "big") + key_bytes + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def dumps(
        self, key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> RawValue:
        if _native_int(value):
            return int(value)
        import pickle

        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _unpicklable_value_error()(
                f"cannot store key {key!r}: {type(value).__name__} cannot be pickled: {exc}"
            ) from None
        return _PICKLE_MARK + self._mac(key, payload) + payload

    def loads(self, key: str, raw: RawValue) -> Any:
        if isinstance(raw, int) or not raw.startswith(_PICKLE_PREFIX):
            return self._json.loads(key, raw)
        if raw.startswith(_OLD_PICKLE_MARK):
            raise SerializationError(
                f"key {key!r} holds a pickled value in the old signed format (!p1), whose "
                "signature does not bind the key unambiguously, so it cannot be told apart from a "
                "forgery; refusing to unpickle it. Store the value again to rewrite it"
            )
        if not raw.startswith(_PICKLE_MARK):
            raise SerializationError(
                f"key {key!r} holds a pickled value in an unknown format ({raw[:3]!r}); refusing "
                "to unpickle it"
            )
        import hmac
        import pickle

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


def _unpicklable_value_error() -> type[SerializationError]:
    """:class:`UnpicklableValueError`, made on first use: pickle is not imported with the package."""
    found = globals().get("UnpicklableValueError")
    if found is None:
        import pickle

        class UnpicklableValueError(SerializationError, pickle.PickleError):
            """A value the pickle serializer cannot pickle; nothing was written.

            Both a :class:`~sharedstate.errors.SerializationError` and a :class:`pickle.PickleError`
            (what Django's own cache backends raise), so code catching either keeps working.
            """

        UnpicklableValueError.__module__ = __name__
        UnpicklableValueError.__qualname__ = "UnpicklableValueError"
        globals()["UnpicklableValueError"] = found = UnpicklableValueError
    return found


def __getattr__(name: str) -> Any:
    if name == "UnpicklableValueError":
        return _unpicklable_value_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
