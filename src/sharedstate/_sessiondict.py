"""The ``dict`` face of a session, shared by the Flask, Quart and Starlette adapters.

No web framework is imported here. Each adapter's session class derives from :class:`TrackedDict`
(Starlette) or :class:`FlaskStyleDict` (Flask, Quart: every read is noted, and Flask's
``permanent`` and ``modified``) and provides the hooks:

- ``_access()``: before any read of the data (Flask: load lazily; Quart: note the read).
- ``_load()``: make the data present without noting a read (Flask: load lazily).
- ``_check_open()``: before a deletion (Starlette: refuse once changes cannot be saved any more).
- ``_changed()``: a mutating method is applied (all: tell the engine; Starlette: refuse first).
- ``_touch(key)`` / ``_touch_all()``: a value is handed out, replaced or removed: the engine's
  ``touch`` (the save then compares only those keys: a value never handed out cannot have changed).

Every mutating method is tracked; copies and pickles are plain dicts. A session object belongs to
one request and is not thread or task safe.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, SupportsIndex, TypeVar

from sharedstate._sessions import check_key

__all__ = ["AccessedDict", "FlaskStyleDict", "TrackedDict"]

_D = TypeVar("_D", bound="TrackedDict")


class TrackedDict(dict[str, Any]):
    """A ``dict`` of str keys whose changes and handed-out values are reported to the engine."""

    _state: Any  # the engine's session state (touch, touch_all, changed); adapters narrow it

    # -- hooks (see the module doc) ---------------------------------------------------------------

    def _access(self) -> None:
        pass

    def _load(self) -> None:
        pass

    def _check_open(self) -> None:
        pass

    def _changed(self) -> None:
        self._state.changed()

    def _touch(self, key: str) -> None:
        self._state.touch(key)

    def _touch_all(self) -> None:
        self._state.touch_all()

    # -- the dict ---------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._access()
        self._touch(key)
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        check_key(key)
        self._load()
        self._changed()
        self._touch(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._load()
        self._check_open()
        self._touch(key)
        dict.__delitem__(self, key)
        self._changed()

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        self._access()
        self._touch_all()
        return {**dict.copy(self), **other}

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        self._access()
        self._touch_all()
        return {**other, **dict.copy(self)}

    def __ior__(self: _D, other: Any) -> _D:  # type: ignore[override]
        self.update(other)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        self._access()
        self._touch(key)
        return dict.get(self, key, default)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._access()
        self._touch_all()
        return dict.values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._access()
        self._touch_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A shallow copy, as a plain ``dict``."""
        self._access()
        self._touch_all()
        return dict.copy(self)

    @classmethod
    def fromkeys(cls, iterable: Iterable[str], value: Any = None) -> dict[str, Any]:  # type: ignore[override]
        """A plain ``dict``: a session only comes from its framework's session machinery."""
        return dict.fromkeys(iterable, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._access()
        if dict.__contains__(self, key):
            self._touch(key)
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        self._access()
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        if dict.__contains__(self, key):
            self._changed()
            self._touch(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._access()
        self._check_open()
        self._touch_all()
        item = dict.popitem(self)  # KeyError if empty: nothing changed
        self._changed()
        return item

    def update(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 positional argument, got {len(args)}")
        new = dict(*args, **kwargs)
        for key in new:
            check_key(key)
        self._load()
        self._changed()
        for key in new:
            self._touch(key)
        dict.update(self, new)

    def clear(self) -> None:
        """Delete every key this request sees (keys added meanwhile by other requests stay)."""
        self._load()
        self._changed()
        self._touch_all()
        dict.clear(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # copy.copy, copy.deepcopy and pickle give a plain dict: the store, lock and request
        # state of a session belong to its request.
        self._load()
        self._touch_all()
        return (dict, (dict.copy(self),))


class AccessedDict(TrackedDict):
    """A :class:`TrackedDict` whose every read, even of keys only, calls ``_access()`` first."""

    def __iter__(self) -> Iterator[str]:
        self._access()
        return iter(list(dict.keys(self)))  # a snapshot: deleting keys while iterating is fine

    def __len__(self) -> int:
        self._access()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._access()
        return dict.__contains__(self, key)

    def __eq__(self, other: object) -> bool:
        self._access()
        if isinstance(other, TrackedDict):
            other._load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        self._access()
        return dict.keys(self)


class FlaskStyleDict(AccessedDict):
    """An :class:`AccessedDict` with the ``permanent`` and ``modified`` of Flask's and Quart's
    ``SessionMixin``, over the adapter's ``_settings`` (``SessionSettings``) and ``_state``."""

    _settings: Any

    @property
    def permanent(self) -> bool:
        """``session["_permanent"]`` if set, else the app's ``SESSION_PERMANENT`` (default False).

        A permanent session's cookie expires with the server-side idle lifetime; any other is a
        browser-session cookie. The server-side lifetimes apply to both.
        """
        return bool(self.get("_permanent", self._settings.permanent))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)

    @property
    def modified(self) -> bool:
        """Whether a mutating method was called (nested changes are found at save time anyway).

        Set it to ``False`` to skip saving this request's changes (Flask's ``should_set_cookie``
        behaves so); ``incr`` and ``destroy`` were applied at once and stay applied.
        """
        return bool(self._state.mutated)

    @modified.setter
    def modified(self, value: bool) -> None:
        self._state.mutated = bool(value)
        self._state.discard = not value
