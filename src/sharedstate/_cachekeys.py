"""How ``cached`` names its entries: a canonical, process-independent encoding of the arguments.

IO-free, shared by the sync and the async ``cached``. Only values with a stable meaning in every
process can be encoded (see :mod:`sharedstate.cache`); anything else raises ``TypeError`` instead of
silently producing a key that differs from process to process, or that two different arguments
share.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import inspect
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sharedstate.engine import RESERVED_PREFIX
from sharedstate.validation import key_text

CACHE_PREFIX = f"{RESERVED_PREFIX}cache:"
FLIGHT_SUFFIX = ":flight"


def function_name(fn: Callable[..., Any], name: str | None) -> str:
    """The name entries of ``fn`` are keyed by: ``name``, else ``module.qualname``."""
    qualname = getattr(fn, "__qualname__", None)
    if name is None and (not isinstance(qualname, str) or "<lambda>" in qualname):
        # repr() would hold a memory address (a different key in every process), and all
        # lambdas of a module share one qualified name.
        raise TypeError(
            f"cannot cache {fn!r} under its own name (a lambda, or a callable without "
            "__qualname__): pass name='...' to cached()"
        )
    return name or f"{getattr(fn, '__module__', None) or '?'}.{qualname}"


def check_name(name: str | None) -> None:
    if name is not None and (key_text(name, "name") == ""):
        raise ValueError(f"name must be a non-empty str, got {name!r}")


def signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: key on the raw arguments
        return None


def cache_key(name: str, signature: inspect.Signature | None, args: Any, kwargs: Any) -> str:
    """The key (namespace not included) that holds the result of ``name(*args, **kwargs)``."""
    if signature is not None:
        bound = signature.bind(*args, **kwargs)  # TypeError for a call that cannot work
        bound.apply_defaults()
        named: list[tuple[str, Any]] = list(bound.arguments.items())
    else:
        named = [(f"#{i}", v) for i, v in enumerate(args)] + sorted(kwargs.items())
    try:
        tree = [[arg, _canonical(value, f"argument {arg!r}")] for arg, value in named]
        canonical = json.dumps(tree, separators=(",", ":"), allow_nan=True)
    except RecursionError:
        raise TypeError(
            f"cannot cache {name}(): its arguments are nested too deeply or contain a cycle"
        ) from None
    except _Uncacheable as exc:
        raise TypeError(
            f"cannot cache {name}(): {type(exc.value).__name__} in {exc.path} has no stable "
            f"encoding across processes; cacheable argument types: {_CACHEABLE}. Pass a plain "
            "value that identifies it instead (an id, a tuple of fields)"
        ) from None
    digest = hashlib.sha256(f"{name}\0{canonical}".encode()).hexdigest()[:40]
    return f"{CACHE_PREFIX}{name}:{digest}"


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


def refuse_uncacheable_function(fn: Callable[..., Any], *, want_coroutine: bool) -> None:
    """Raise ``TypeError`` for a function of the wrong kind (a coroutine function for the sync
    ``cached``, anything else for the async one) or a method, which ``cached`` cannot serve."""
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    if is_async and not want_coroutine:
        raise TypeError(
            f"cannot cache {_describe(fn)}: it is async, so a call returns a coroutine (or async "
            "generator), which cannot be stored. Store.cached() serves synchronous functions; use "
            "AsyncStore.cached() for coroutine functions, or cache a synchronous function instead"
        )
    if want_coroutine and not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"cannot cache {_describe(fn)}: AsyncStore.cached() serves coroutine functions "
            "(async def); use Store.cached() for a synchronous function"
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
