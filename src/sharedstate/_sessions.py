"""The IO-free half of the server-side session engine, shared by the async and sync worlds.

No web framework is imported here (nor in ``sharedstate._async.sessions``): the Flask, Starlette
and Quart adapters build on this. What is here: the settings (lifetimes, lock), the session id and
its store key (a SHA-256 of the id, so the store holds no live tokens), the stored envelope
(``{"v": 1, "c": created, "d": data}``), and signing the id for the cookie
(:class:`CookieSigner`, HMAC-SHA256 with :mod:`itsdangerous`, imported when a signer is made).
The state machine that reads and writes the store is ``AsyncSessionState`` / ``SessionState``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sharedstate._optional import require
from sharedstate.engine import RESERVED_PREFIX
from sharedstate.validation import MIN_LEASE, seconds

if TYPE_CHECKING:
    from datetime import timedelta

SESSION_PREFIX = f"{RESERVED_PREFIX}session:"
LOCK_PREFIX = f"{RESERVED_PREFIX}session-lock:"
ID_BYTES = 32  # 256 bits
ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
FORMAT = 1
DEFAULT_SALT = "sharedstate.session"
#: Types whose values cannot change in place: a session value of one of these that was read and
#: not replaced needs no encoding to tell that it did not change.
IMMUTABLE_TYPES = frozenset({str, int, float, bool, type(None), bytes})


class _Keyspace(Protocol):
    prefix: str

    def full_key(self, key: str, *, internal: bool = False, what: str = "key") -> str: ...

    def encode(
        self, full_key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> bytes | int: ...

    def decode(self, full_key: str, raw: bytes | int) -> Any: ...


@dataclass(frozen=True)
class SessionSettings:
    """The settings of one session: lifetimes (seconds), expiry refresh, lock, cookie default.

    ``idle``: the entry expires this long after its last write or refresh. ``absolute``: and at
    the latest this long after creation or the last ``regenerate`` (``None``: no such limit).
    ``refresh``: a read-only use renews the idle expiry (a throttled ``touch``) once
    ``refresh_fraction`` of ``idle`` has passed since the cookie was issued. ``lock``: a
    per-session lease lock (``lock_lease`` seconds) is taken before loading, waiting at most
    ``lock_timeout``; ``lock_timeout_name`` names that setting in the ``LockTimeout`` message.
    ``permanent``: the framework's default for a cookie with an expiry.
    """

    idle: float
    absolute: float | None = None
    refresh: bool = True
    refresh_fraction: float = 0.1
    lock: bool = False
    lock_lease: float = 30.0
    lock_timeout: float = 30.0
    permanent: bool = False
    lock_timeout_name: str = "lock_timeout"

    @classmethod
    def create(
        cls,
        *,
        idle: float | timedelta,
        absolute: float | timedelta | None = None,
        refresh: bool = True,
        refresh_fraction: float = 0.1,
        lock: bool = False,
        lock_lease: float | timedelta = 30.0,
        lock_timeout: float | timedelta = 30.0,
        permanent: bool = False,
        names: dict[str, str] | None = None,
    ) -> SessionSettings:
        """Check every value (``TypeError``/``ValueError`` naming it, by ``names[arg]`` if given)
        and build the settings."""
        names = names or {}

        def name(arg: str) -> str:
            return names.get(arg, arg)

        if (
            isinstance(refresh_fraction, bool)
            or not isinstance(refresh_fraction, (int, float))
            or not (0 <= refresh_fraction <= 1)
        ):
            raise ValueError(f"{name('refresh_fraction')} must be in [0, 1], got {refresh_fraction!r}")
        if not isinstance(permanent, bool):  # "False" from an environment variable is truthy
            raise TypeError(f"{name('permanent')} must be True or False, got {permanent!r}")
        return cls(
            idle=seconds(name("idle"), idle),
            absolute=seconds(name("absolute"), absolute, optional=True),
            refresh=bool(refresh),
            refresh_fraction=float(refresh_fraction),
            lock=bool(lock),
            lock_lease=seconds(name("lock_lease"), lock_lease, minimum=MIN_LEASE),
            lock_timeout=seconds(name("lock_timeout"), lock_timeout),
            permanent=permanent,
            lock_timeout_name=name("lock_timeout"),
        )

    def ttl(self, created: float, now: float) -> float | None:
        """Seconds the entry may live from ``now``; ``None`` if its absolute lifetime is over."""
        if self.absolute is None:
            return self.idle
        left = created + self.absolute - now
        return None if left <= 0 else min(self.idle, left)


class SaveAction(NamedTuple):
    """What the response's cookie must do after a save: ``kind`` is ``"set"`` (to the signed
    ``sid``, with the entry's ``ttl``), ``"delete"`` or ``"keep"`` (send nothing)."""

    kind: str
    sid: str | None = None
    ttl: float | None = None


KEEP = SaveAction("keep")
DELETE = SaveAction("delete")


def new_session_id() -> str:
    """A fresh random 256-bit session id (URL-safe text)."""
    return secrets.token_urlsafe(ID_BYTES)


def sid_digest(sid: str) -> str:
    """The SHA-256 (hex) of a session id: what names its entry in the store."""
    return hashlib.sha256(sid.encode("ascii")).hexdigest()


def entry_key(keyspace: _Keyspace, sid: str) -> str:
    """The full store key of session ``sid``: a SHA-256 of the id, so the store holds no tokens."""
    # As keyspace.full_key(..., internal=True), without checking text that is valid by construction.
    return keyspace.prefix + SESSION_PREFIX + sid_digest(sid)


def check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"session keys must be str, got {type(key).__name__}: {key!r}")


def has_content(data: dict[str, Any]) -> bool:
    """Whether ``data`` holds more than the ``_permanent`` flag. A session holding only that is
    empty: not stored (so ``session.permanent = True`` in a ``before_request`` hook stores
    nothing for visitors who never get a session), and deleted with its cookie when emptied."""
    return any(key != "_permanent" for key in data)


def encoded_entry(keyspace: _Keyspace, full: str, created: float, data: dict[str, Any]) -> bytes | int:
    """The stored form of a session; an error names the path inside the session
    (``session['cart'][2]``), not inside the envelope around it."""
    envelope = {"v": FORMAT, "c": created, "d": data}
    return keyspace.encode(full, envelope, shown_as="session", inside=("d",))


def parse(keyspace: _Keyspace, key: str, raw: bytes | int) -> tuple[float, dict[str, Any]] | None:
    """``(created, data)`` of a stored entry, or ``None`` if it is not a session entry."""
    try:
        value = keyspace.decode(key, raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("v") != FORMAT:
        return None
    created, data = value.get("c"), value.get("d")
    if not isinstance(created, (int, float)) or not isinstance(data, dict):
        return None
    return float(created), data


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")

# -- the cookie ------------------------------------------------------------------------------------


class CookieSigner:
    """Signs session ids for the cookie and checks them: HMAC-SHA256 with a timestamp
    (:class:`itsdangerous.TimestampSigner`, key derivation ``hmac``, each key derived once).

    ``CookieSigner(secret_keys, salt=...)``: the last key signs; every key is accepted when
    reading (put the old keys first to rotate). :meth:`unsign` returns ``(sid, issued_at)`` or
    ``None`` for anything tampered, forged, malformed or not a session id: the caller then starts
    a fresh session, never adopting the id. Thread and task safe.

    The cookies are itsdangerous' own, byte for byte. Signing, and checking a cookie signed with
    the current key in its canonical form (all this signer makes), are done here with one HMAC
    from a prepared key; anything else (an older key, a malformed or tampered cookie) is left to
    itsdangerous, so what is accepted is exactly what itsdangerous accepts. The last
    ``VERIFIED_CACHE`` cookies found valid are remembered (a browser sends the same cookie until
    it is issued again), so a repeated cookie costs a dict lookup; forged ones are never kept.
    """

    VERIFIED_CACHE = 4096

    def __init__(self, secret_keys: Iterable[str | bytes], salt: str = DEFAULT_SALT) -> None:
        keys = [k.encode() if isinstance(k, str) else k for k in secret_keys]
        if not keys or not all(isinstance(k, bytes) and k for k in keys):
            raise ValueError("session cookies need a non-empty secret key")
        itsdangerous = require("itsdangerous", "starlette")
        self._bad_data: type[Exception] = itsdangerous.BadData
        want_bytes = itsdangerous.want_bytes

        class _Signer(itsdangerous.TimestampSigner):  # type: ignore[misc, name-defined]
            """itsdangerous' timestamp signer, deriving each key once rather than per request."""

            def __init__(self, keys: list[bytes], salt: str) -> None:
                super().__init__(keys, salt=salt, key_derivation="hmac", digest_method=hashlib.sha256)
                self._derived: dict[bytes, bytes] = {}

            def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
                raw = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
                key = self._derived.get(raw)
                if key is None:
                    key = self._derived[raw] = super().derive_key(raw)
                return key

        self._signer = _Signer(keys, salt)
        # HMAC-SHA256 keyed with the derived current key, copied per use (no key set-up per call).
        self._mac = hmac.new(self._signer.derive_key(), digestmod=hashlib.sha256)
        self._verified: dict[str | bytes, tuple[str, float]] = {}

    def _signature(self, signed: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(signed)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")

    @property
    def timestamp_signer(self) -> Any:
        """The :class:`itsdangerous.TimestampSigner` that does the work."""
        return self._signer

    def sign(self, sid: str) -> str:
        """The cookie value for session id ``sid``."""
        # As itsdangerous' TimestampSigner.sign: value.timestamp.signature, URL-safe base64.
        stamp = int(time.time())
        encoded = base64.urlsafe_b64encode(stamp.to_bytes((stamp.bit_length() + 7) // 8 or 1, "big"))
        signed = sid.encode("ascii") + b"." + encoded.rstrip(b"=")
        return (signed + b"." + self._signature(signed)).decode("ascii")

    def unsign(self, cookie: str | bytes) -> tuple[str, float] | None:
        """``(sid, issued_at)`` of a cookie this signer (or an older key) made; else ``None``."""
        verified = self._verified.get(cookie)
        if verified is not None:
            return verified
        verified = self._unsign_current(cookie) or self._unsign(cookie)
        if verified is not None:
            if len(self._verified) >= self.VERIFIED_CACHE:
                self._verified.clear()  # (a lost race of threads: an entry is dropped, or kept twice)
            self._verified[cookie] = verified
        return verified

    def _unsign(self, cookie: str | bytes) -> tuple[str, float] | None:
        """Any cookie, by itsdangerous (every key, every encoding it accepts)."""
        try:
            value, stamp = self._signer.unsign(cookie, return_timestamp=True)
            text = value.decode("ascii")
        except (self._bad_data, UnicodeError, ValueError):
            return None  # tampered, forged or malformed: a fresh session
        if not ID_RE.fullmatch(text):
            return None
        return text, float(stamp.timestamp())

    def _unsign_current(self, cookie: str | bytes) -> tuple[str, float] | None:
        """The common case, checked in a few C calls: a session id and a timestamp signed with the
        current key, canonically encoded. ``None``: not that case (not necessarily invalid)."""
        try:
            raw = cookie.encode("ascii") if isinstance(cookie, str) else cookie
            signed, _, signature = raw.rpartition(b".")
            if not hmac.compare_digest(signature, self._signature(signed)):
                return None
            value, _, stamp = signed.rpartition(b".")
            text = value.decode("ascii")
            if len(stamp) > 11 or not ID_RE.fullmatch(text):  # 11: 8 bytes in base64
                return None
            stamp = stamp.translate(_FROM_URLSAFE) + b"=" * (-len(stamp) % 4)
            issued = int.from_bytes(binascii.a2b_base64(stamp), "big")
        except (TypeError, ValueError):  # UnicodeError and binascii.Error are ValueErrors
            return None
        return text, float(issued)
