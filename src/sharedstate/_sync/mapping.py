"""The sync ``SharedDict``: the generated dict plus the ``MutableMapping`` protocol (hand-written).

``d[k]``, ``d[k] = v``, ``del d[k]``, ``k in d``, ``len(d)``, iteration and the ``keys()``,
``items()``, ``values()`` views, each made of the generated methods (one source of truth for
what reaches the backend).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any

from sharedstate._sync import objects as _generated

_MISSING: Any = object()

__all__ = ["SharedDict"]


class SharedDict(_generated.SharedDict, MutableMapping[str, Any]):
    """A ``MutableMapping`` whose items live one per key, at ``"{name}:{item}"``.

    ``%`` and ``:`` in ``name`` are stored percent-encoded (``%25``, ``%3A``), so the items of
    dict ``"a"`` and of dict ``"a:b"`` never share a key or show up in each other's iteration.

    Each item operation is atomic on its own; ``setdefault``, ``pop``, ``incr`` and ``update_item``
    are atomic read-modify-writes. Iteration and ``len`` scan the prefix and see a live, not a
    frozen, view. Writers of different items never contend.
    """

    def __getitem__(self, item: str) -> Any:
        value = self.get(item, _MISSING)
        if value is _MISSING:
            raise KeyError(item)
        return value

    def __setitem__(self, item: str, value: Any) -> None:
        self.set(item, value)

    def __delitem__(self, item: str) -> None:
        if not self.delete(item):
            raise KeyError(item)

    def __contains__(self, item: object) -> bool:
        return self.contains(item)

    def __iter__(self) -> Iterator[str]:
        return self._names()

    def __len__(self) -> int:
        return self.len()

    # The Mapping views (live, like iteration), not the generated methods' sorted lists.
    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return KeysView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return ItemsView(self)

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)
