"""``cached``: memoize a function's results in a store, computed once across processes.

Keys are ``_ss:cache:{module}.{qualname}:{digest}``, where the digest is a SHA-256 of a canonical
encoding of the call's arguments (bound to the signature, so ``f(1)``, ``f(x=1)`` and ``f(1, y=2)``
with ``y=2`` as default are one entry). Only values with a stable meaning in every process can be
encoded: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``,
``set``, ``frozenset``, ``datetime``, ``date``, ``UUID``, ``Decimal``, ``Enum`` members and
``markupsafe.Markup`` (anything with ``__html__``, keyed apart from the plain ``str``). Anything else
(an object whose ``repr`` holds a memory address, a method's ``self``, a subclass of ``str``,
``int`` or ``float``, which could mean something else than its base value) raises ``TypeError``
instead of silently producing a key that differs from process to process, or that two different
arguments share.

Only plain synchronous functions can be decorated: a coroutine function (its result would be a
coroutine, which cannot be stored) and a method defined in a class body (its ``self`` has no stable
encoding, and the call would miss it) are refused when decorated.

Each entry is stored as ``{"v": value}`` (``{"v": value, "f": fresh_until}`` with ``stale_ttl``), so a
cached ``None`` is told apart from a miss.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import inspect
import json
import secrets
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Generic, ParamSpec, TypeVar

from sharedstate.store import RESERVED_PREFIX, Store, backoff_delays
from sharedstate.validation import MIN_LEASE, key_text, seconds

P = ParamSpec("P")
R = TypeVar("R")

CACHE_PREFIX = f"{RESERVED_PREFIX}cache:"
_FLIGHT_SUFFIX = ":flight"
_MISS: Any = object()


def cached(
    store: Store | Callable[[], Store],
    ttl: float,
    *,
    stale_ttl: float | None = None,
    lease: float = 30.0,
    name: str | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Decorator caching a function's results in ``store`` for ``ttl`` seconds.

    ``store`` is a :class:`~sharedstate.store.Store`, or a callable returning one at call time (the
    Flask extension passes one that resolves the current app's store, so functions can be decorated
    at import time, before any app exists).

    Concurrency contract, across threads, processes and machines sharing the store:

    - **Single flight.** When a key is missing, exactly one caller computes it; the others poll for
      the value with jittered backoff and return it once stored. The computing caller holds a
      ``"…:flight"`` key with a lease of ``lease`` seconds, so a caller that crashes (or is killed)
      while computing blocks the others for at most ``lease``: then one of them computes instead.
      A computation that outlives its lease may run a second time, concurrently; size ``lease`` above
      the function's slowest run. If the computing caller raises, nothing is cached, the exception
      goes to that caller only, and one waiter takes over the computation.
    - **Stale while revalidate.** With ``stale_ttl``, an entry stays ``stale_ttl`` seconds past its
      ``ttl``. A caller that finds it stale returns the stale value at once, except exactly one
      (whichever takes the flight key), which recomputes, stores and returns the fresh value (or
      raises, leaving the stale value in place). Freshness is judged by the callers' wall clocks;
      machines should keep them in sync (NTP), as skew shifts when an entry counts as stale.
    - Results must be storable by the store's codec (``SerializationError`` otherwise, raised to the
      computing caller; nothing is stored). ``None`` is cached like any other result.
    - :meth:`CachedFunction.invalidate` deletes one entry; the next call recomputes it. A call already
      computing when you invalidate may still store its (older) result.

    Entries are keyed by ``name`` (default: the function's ``module.qualname``) and the arguments.
    Functions that would share a qualified name (closures made by one factory) share entries
    unless each gets its own ``name``; a lambda must be given one. ``lease`` is at least
    ``validation.MIN_LEASE`` seconds.

    Coroutine functions and methods are refused when decorated (``TypeError``): cache a
    module-level function of plain arguments and call it from the method. A bound method
    (``cached(ttl=60)(obj.method)``) is accepted; like closures, the entries of every instance are
    shared unless each gets its own ``name``.
    """
    ttl = seconds("ttl", ttl)
    stale = seconds("stale_ttl", stale_ttl, optional=True)
    lease = seconds("lease", lease, minimum=MIN_LEASE)

    if name is not None and (key_text(name, "name") == ""):
        raise ValueError(f"name must be a non-empty str, got {name!r}")

    def decorate(fn: Callable[P, R]) -> CachedFunction[P, R]:
        return CachedFunction(store, fn, ttl=ttl, stale_ttl=stale, lease=lease, name=name)

    return decorate


class CachedFunction(Generic[P, R]):
    """A function whose results are cached in a store; see :func:`cached` for the contract.

    Call it like the function. ``invalidate(*args, **kwargs)`` drops the entry for those
    arguments, ``invalidate_all()`` every entry of this function, and ``cache_key(*args, **kwargs)``
    tells which key (without the namespace) holds the entry. The object holds no state besides
    its configuration, so it is safe to share between threads.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        fn: Callable[P, R],
        *,
        ttl: float,
        stale_ttl: float | None,
        lease: float,
        name: str | None = None,
    ) -> None:
        _refuse_uncacheable_function(fn)
        self._store = store
        self.fn = fn
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.lease = lease
        qualname = getattr(fn, "__qualname__", None)
        if name is None and (not isinstance(qualname, str) or "<lambda>" in qualname):
            # repr() would hold a memory address (a different key in every process), and all
            # lambdas of a module share one qualified name.
            raise TypeError(
                f"cannot cache {fn!r} under its own name (a lambda, or a callable without "
                "__qualname__): pass name='...' to cached()"
            )
        self.name = name or f"{getattr(fn, '__module__', None) or '?'}.{qualname}"
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none: key on the raw arguments
            self._signature = None
        functools.update_wrapper(self, fn)

    # -- keys ---------------------------------------------------------------------------------

    def _resolve_store(self) -> Store:
        return self._store if isinstance(self._store, Store) else self._store()

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key (namespace not included) that holds the result for these arguments."""
        if self._signature is not None:
            bound = self._signature.bind(*args, **kwargs)  # TypeError for a call that cannot work
            bound.apply_defaults()
            named: list[tuple[str, Any]] = list(bound.arguments.items())
        else:
            named = [(f"#{i}", v) for i, v in enumerate(args)] + sorted(kwargs.items())
        try:
            tree = [[name, _canonical(value, f"argument {name!r}")] for name, value in named]
            canonical = json.dumps(tree, separators=(",", ":"), allow_nan=True)
        except RecursionError:
            raise TypeError(
                f"cannot cache {self.name}(): its arguments are nested too deeply or contain a cycle"
            ) from None
        except _Uncacheable as exc:
            raise TypeError(
                f"cannot cache {self.name}(): {type(exc.value).__name__} in {exc.path} has no stable "
                f"encoding across processes; cacheable argument types: {_CACHEABLE}. Pass a plain "
                "value that identifies it instead (an id, a tuple of fields)"
            ) from None
        digest = hashlib.sha256(f"{self.name}\0{canonical}".encode()).hexdigest()[:40]
        return f"{CACHE_PREFIX}{self.name}:{digest}"

    # -- calls --------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        store = self._resolve_store()
        full = store.full_key(self.cache_key(*args, **kwargs), internal=True)
        flight = full + _FLIGHT_SUFFIX
        backend = store.backend

        value, fresh = self._read(store, full)
        if value is not _MISS:
            if fresh:
                return value  # type: ignore[no-any-return]
            # Stale: exactly one caller (whoever takes the flight key) refreshes, the rest serve
            # stale. Looking before add() keeps readers of a stale entry from all writing.
            token = None if backend.get(flight) is not None else self._take_flight(store, flight)
            if token is None:
                return value  # type: ignore[no-any-return]
            return self._compute(store, full, flight, token, args, kwargs)

        while True:
            token = self._take_flight(store, flight)
            if token is not None:
                return self._compute(store, full, flight, token, args, kwargs)
            # Someone else computes: poll (reads only) until the value appears, or until their
            # flight key is gone without one (they raised, or crashed and the lease ran out); then
            # try to take the computation over.
            delays = backoff_delays(first=0.002, cap=0.1)
            while True:
                time.sleep(next(delays))
                value, _ = self._read(store, full)
                if value is not _MISS:
                    return value  # type: ignore[no-any-return]
                if backend.get(flight) is None:
                    break

    def _compute(
        self,
        store: Store,
        full: str,
        flight: str,
        token: bytes,
        args: Any,
        kwargs: Any,
    ) -> R:
        """Run the function holding the flight key, store the result, release the key."""
        try:
            # Another caller may have stored a fresh value between our read and taking the key
            # (it stores before it releases), so look again before computing.
            value, fresh = self._read(store, full)
            if value is not _MISS and fresh:
                return value  # type: ignore[no-any-return]
            result = self.fn(*args, **kwargs)
            if self.stale_ttl is None:
                wrapper: dict[str, Any] = {"v": result}
                keep = self.ttl
            else:
                wrapper = {"v": result, "f": time.time() + self.ttl}
                keep = self.ttl + self.stale_ttl
            # Errors name the path inside the result, not inside this wrapper.
            raw = store.encode(full, wrapper, shown_as="result", inside=("v",))
            store.backend.set(full, raw, keep)
            return result
        finally:
            entry = store.backend.get(flight)
            if entry is not None and entry.value == token:
                store.backend.delete_if_version(flight, entry.version)

    def _take_flight(self, store: Store, flight: str) -> bytes | None:
        token = b"flight:" + secrets.token_hex(16).encode()
        return token if store.backend.add(flight, token, self.lease) else None

    def _read(self, store: Store, full: str) -> tuple[Any, bool]:
        """``(value, fresh)``, or ``(_MISS, False)`` if there is no usable entry."""
        entry = store.backend.get(full)
        if entry is None:
            return _MISS, False
        wrapper = store.decode(full, entry.value)
        if not isinstance(wrapper, dict) or "v" not in wrapper:
            return _MISS, False  # not written by us: recompute and overwrite
        fresh_until = wrapper.get("f")
        fresh = not isinstance(fresh_until, (int, float)) or time.time() < fresh_until
        return wrapper["v"], fresh

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the entry for these arguments; return whether there was one."""
        store = self._resolve_store()
        return store.backend.delete(store.full_key(self.cache_key(*args, **kwargs), internal=True))

    def invalidate_all(self) -> int:
        """Delete every entry of this function; return how many. Not atomic across entries."""
        store = self._resolve_store()
        prefix = store.full_key(f"{CACHE_PREFIX}{self.name}:", internal=True)
        removed = 0
        for full in list(store.backend.scan(prefix)):
            if not full.endswith(_FLIGHT_SUFFIX) and store.backend.delete(full):
                removed += 1
        return removed

    def __repr__(self) -> str:
        return f"<CachedFunction {self.name} ttl={self.ttl} stale_ttl={self.stale_ttl}>"


# -- canonical argument encoding ------------------------------------------------------------------

_CACHEABLE = (
    "None, bool, int, float, str, bytes, tuple, list, dict, set, frozenset, datetime, date, UUID, "
    "Decimal, Enum members"
)


class _Uncacheable(Exception):
    def __init__(self, path: str, value: object) -> None:
        self.path, self.value = path, value


def _canonical(value: Any, path: str) -> Any:
    """A JSON-ready tree that is equal for equal arguments in every process, and tags types.

    Scalars JSON tells apart (``1``, ``1.0``, ``true``, ``"1"``) stay as they are; everything else is
    a ``[tag, payload]`` list, so ``(1, 2)``, ``[1, 2]`` and ``{1, 2}`` give different keys.
    """
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if isinstance(value, enum.Enum):
        return ["enum", f"{kind.__module__}.{kind.__qualname__}", value.name]
    if kind is tuple or kind is list:
        return [kind.__name__, [_canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]]
    if isinstance(value, dict):
        items = [(_canonical(k, f"{path} key"), v) for k, v in value.items()]
        pairs = [[k, _canonical(v, f"{path}[{k!r}]")] for k, v in items]
        return ["dict", sorted(pairs, key=_sort_key)]
    if kind is set or kind is frozenset:
        members = [_canonical(v, f"{path}{{item}}") for v in value]
        return [kind.__name__, sorted(members, key=_sort_key)]
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind is dt.datetime:
        return ["datetime", value.isoformat()]
    if kind is dt.date:
        return ["date", value.isoformat()]
    if kind is uuid.UUID:
        return ["uuid", str(value)]
    if kind is Decimal:
        return ["decimal", str(value)]
    html = getattr(value, "__html__", None)
    if callable(html):  # Markup("<b>") is already-safe HTML, "<b>" is text: different results
        return ["markup", str(html())]
    # Any other subclass of str/int/float is refused: keyed as its base value it would share an
    # entry with an argument that may mean something else (as the store's codec refuses them).
    raise _Uncacheable(path, value)


def _sort_key(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), allow_nan=True)


def _refuse_uncacheable_function(fn: Callable[..., Any]) -> None:
    """Raise ``TypeError`` for a coroutine function or a method, which ``cached`` cannot serve."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"cannot cache {_describe(fn)}: it is async, so a call returns a coroutine (or async "
            "generator), which cannot be stored. cached() serves synchronous functions; an async "
            "API is planned. Cache a synchronous function instead"
        )
    if _is_method_in_class_body(fn):
        raise TypeError(
            f"cannot cache method {_describe(fn)}: its self/cls argument has no stable encoding "
            "across processes (and the call would miss it). Cache a module-level function of plain "
            "arguments (an id, not the object) and call it from the method, or decorate a "
            "@staticmethod whose arguments are plain data"
        )


def _is_method_in_class_body(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is being defined in a class body with a ``self``/``cls`` first parameter.

    At decoration time a method is a plain function; what gives it away is its qualified name
    (``Class.method``, not ``module_function`` nor ``outer.<locals>.inner``) together with the
    name of its first parameter.
    """
    if inspect.ismethod(fn):
        return False  # already bound (obj.method): its self is not an argument of the call
    qualname = getattr(fn, "__qualname__", "")
    if not isinstance(qualname, str) or "." not in qualname:
        return False
    if qualname.rsplit(".", 2)[-2] == "<locals>":
        return False  # a function nested in a function, not in a class
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None or code.co_argcount == 0:
        return False
    return code.co_varnames[0] in ("self", "cls")


def _describe(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{getattr(fn, '__module__', None) or '?'}.{qualname}"
