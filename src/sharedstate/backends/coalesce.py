"""Group commit for ``incr`` in an async backend (used by ``sqlite://``; any backend may use it).

An ``incr`` that can run at once runs alone. One that has to wait (its backend's write lock is
taken) starts a *group*: until the group's increment is written, every ``incr`` of the same key
with the same ``ttl`` in the same process and event loop joins it instead of waiting on its own.
A task of the coalescer (the group's *driver*) then writes them all at once, as one increment by
the sum, in one transaction: one commit, one lock acquisition, instead of one each.

What each caller sees is exactly what it would have seen had the calls run one after another in
arrival order, which they may as well have (they were concurrent):

- its own value: the group's result minus the ``by`` of every later member;
- ``OverflowError`` or success each as alone: a backend applies the sum only when no partial sum
  leaves the signed 64-bit range, else it applies the members one by one, each alone;
- the same ``TypeError`` for all when the key holds a non-integer (nothing applied);
- the same error for all when the write fails, with the same ``applied``: the group is written
  in one transaction, so its members are applied together or not at all;
- ``ttl`` applies when the group creates the key (members with a different ``ttl`` form their own
  group, so the creator's ``ttl`` is every member's).

Cancellation: a member cancelled while its group waits is left out of the write (not applied),
and the others go on; the driver is a task of its own, so no member's cancellation stops it.
A member cancelled after its group's increment was written was applied, as any ``await`` that is
cancelled just after its operation completed.

The backend supplies ``apply``: a coroutine that writes a group. Each attempt it makes calls
:meth:`IncrGroup.take` once, synchronously just before writing, and writes exactly the members it
returned; ``apply`` returns one outcome per member of its last ``take`` (what the backend's own
``incr`` turns into a value or an error), or raises the error of the whole group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sharedstate.errors import BackendUnavailableError

__all__ = ["IncrCoalescer", "IncrGroup", "Member"]


class Member:
    """One ``incr`` call waiting in a group: its ``by`` and the future its caller awaits."""

    __slots__ = ("by", "future")

    def __init__(self, by: int, future: asyncio.Future[object]) -> None:
        self.by = by
        self.future = future


class IncrGroup:
    """The ``incr`` calls of one key and ``ttl`` written together (see the module docstring)."""

    __slots__ = ("key", "members", "sent", "ttl")

    def __init__(self, key: str, ttl: float | None) -> None:
        self.key = key
        self.ttl = ttl
        self.members: list[Member] = []  # arrival order
        self.sent: list[Member] = []  # what the last attempt wrote (or tried to)

    def take(self) -> list[Member]:
        """The members still waiting, in arrival order: what the attempt about to run writes.

        Call it once per attempt, with no ``await`` between it and the write, so nobody can join
        or leave in between.
        """
        self.sent = [m for m in self.members if not m.future.done()]
        return self.sent


Apply = Callable[[IncrGroup], Awaitable[list[object]]]
After = Callable[[int], Awaitable[None]]


class IncrCoalescer:
    """The groups of one backend, per event loop, key and ``ttl``.

    ``apply(group)`` writes a group (see the module docstring); ``after(n)``, if given, runs in
    the driver once the ``n`` members written have their results (a backend's upkeep after
    writes, such as sweeping), so no caller waits for it.

    Usage in a backend's ``incr``: ``group = coalescer.pending(key, ttl)``; if there is one,
    ``return await coalescer.join(group, by)``; else try the increment at once, and if it has to
    wait, ``await coalescer.start(key, by, ttl)`` instead of waiting. Both return the outcome.
    """

    def __init__(self, apply: Apply, after: After | None = None) -> None:
        self._apply = apply
        self._after = after
        self._groups: dict[tuple[asyncio.AbstractEventLoop, str, float | None], IncrGroup] = {}
        self._drivers: set[asyncio.Task[None]] = set()  # referenced until done

    def pending(self, key: str, ttl: float | None) -> IncrGroup | None:
        """The group of ``key`` and ``ttl`` waiting in the running loop, if any (free when none)."""
        if not self._groups:
            return None
        return self._groups.get((asyncio.get_running_loop(), key, ttl))

    async def join(self, group: IncrGroup, by: int) -> object:
        """Add an increment to ``group``; its outcome once the group is written."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        group.members.append(Member(by, future))
        return await future

    async def start(self, key: str, by: int, ttl: float | None) -> object:
        """Start a group with this increment (there is none pending); its outcome."""
        loop = asyncio.get_running_loop()
        group = IncrGroup(key, ttl)
        future: asyncio.Future[object] = loop.create_future()
        group.members.append(Member(by, future))
        self._launch(loop, group)
        return await future

    def _launch(self, loop: asyncio.AbstractEventLoop, group: IncrGroup) -> None:
        slot = (loop, group.key, group.ttl)
        self._groups[slot] = group
        driver = loop.create_task(self._drive(slot, group))
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)

    async def _drive(
        self, slot: tuple[asyncio.AbstractEventLoop, str, float | None], group: IncrGroup
    ) -> None:
        try:
            outcomes = await self._apply(group)
        except BaseException as exc:
            # Nobody can have joined since the last attempt (no await in between): close first.
            self._close(slot, group, relaunch=False)
            _fail_all(group, exc)
            if not isinstance(exc, Exception):  # cancelled (the loop is closing), or exiting
                raise
            return
        self._close(slot, group, relaunch=True)
        for member, outcome in zip(group.sent, outcomes, strict=True):
            if not member.future.done():
                member.future.set_result(outcome)
        if self._after is not None and group.sent:
            await self._after(len(group.sent))

    def _close(
        self,
        slot: tuple[asyncio.AbstractEventLoop, str, float | None],
        group: IncrGroup,
        *,
        relaunch: bool,
    ) -> None:
        """The group is written (or failed): later calls start a new one."""
        if self._groups.get(slot) is group:
            del self._groups[slot]
        if not relaunch:
            return
        # Members that joined after the last attempt were not written: a new group of their own.
        # (With an ``apply`` that follows the contract there are none; never leave one waiting.)
        sent = {id(m) for m in group.sent}
        late = [m for m in group.members if id(m) not in sent and not m.future.done()]
        if late and not slot[0].is_closed():
            again = IncrGroup(group.key, group.ttl)
            again.members = late
            self._launch(slot[0], again)


def _fail_all(group: IncrGroup, exc: BaseException) -> None:
    """The group's write failed with ``exc``: each member gets its own copy (the same message and
    ``applied``; ``applied=False`` for a member no attempt had written yet, if any); with a
    cancellation of the driver (the loop is closing), every waiting member is cancelled."""
    sent = {id(m) for m in group.sent}
    for member in group.members:
        future = member.future
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(_copy(exc, written=id(member) in sent))


def _copy(exc: BaseException, *, written: bool) -> BaseException:
    if type(exc) is BackendUnavailableError:
        copy = BackendUnavailableError(str(exc), applied=exc.applied if written else False)
        copy.__cause__ = exc.__cause__ if exc.__cause__ is not None else exc
        return copy
    return exc  # unexpected: the same instance for all (its traceback grows, nothing else differs)
