"""The ``state`` command group of the framework extensions: ``flask state`` and ``quart state``.

One set of commands (list, get, delete, clear, sweep, stats) over a sync
:class:`~sharedstate.store.Store`; each framework says how a command gets the store of its app
(:func:`add_state_commands`). Needs :mod:`click`, which both frameworks depend on.
"""

from __future__ import annotations

import functools
import pprint
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import ParamSpec

import click

from sharedstate.errors import SharedStateError
from sharedstate.store import RESERVED_PREFIX, Store
from sharedstate.urls import mask_url

P = ParamSpec("P")

#: The group's help text.
STATE_HELP = "Inspect and manage this app's sharedstate store."


def clean_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Report the library's errors (backend down, not supported...) as one line, not a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except SharedStateError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return run


def _all_keys(store: Store) -> Iterator[str]:
    """Every key of the namespace, the library's own (``_ss:...``) included."""
    yield from store.keys("")
    yield from store.keys(RESERVED_PREFIX)


def _key_arg(store: Store, key: str) -> str:
    try:
        return store._keyspace.full_key(key, internal=True)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None


def add_state_commands(group: click.Group, app_store: Callable[[], AbstractContextManager[Store]]) -> None:
    """Add ``list``, ``get``, ``delete``, ``clear``, ``sweep`` and ``stats`` to ``group``.

    ``app_store()`` is entered by each command to get the store of the app it acts on (inside the
    library's error handling, so a store that cannot be opened is reported in one line).
    """

    @group.command("list")
    @click.argument("prefix", default="")
    @click.option(
        "--all", "show_all", is_flag=True, help=f"Include the library's own {RESERVED_PREFIX}* keys."
    )
    @clean_errors
    def list_command(prefix: str, show_all: bool) -> None:
        """List the keys starting with PREFIX (namespace not shown)."""
        with app_store() as store:
            keys = store.keys(prefix)
            if show_all and not prefix.startswith(RESERVED_PREFIX) and RESERVED_PREFIX.startswith(prefix):
                keys += store.keys(RESERVED_PREFIX)  # every internal key starts with prefix
            for key in sorted(keys):
                click.echo(key)

    @group.command("get")
    @click.argument("key")
    @clean_errors
    def get_command(key: str) -> None:
        """Print the value at KEY."""
        with app_store() as store:
            full = _key_arg(store, key)
            entry = store.backend.get(full)
            if entry is None:
                raise click.ClickException(f"no key {key!r}")
            click.echo(pprint.pformat(store._keyspace.decode(full, entry.value), sort_dicts=True))

    @group.command("delete")
    @click.argument("key")
    @clean_errors
    def delete_command(key: str) -> None:
        """Delete KEY."""
        with app_store() as store:
            if not store.backend.delete(_key_arg(store, key)):
                raise click.ClickException(f"no key {key!r}")
            click.echo(f"deleted {key}")

    @group.command("clear")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @clean_errors
    def clear_command(yes: bool) -> None:
        """Delete every key of this app's namespace, the library's own included."""
        with app_store() as store:
            where = f"namespace {store.namespace!r}" if store.namespace else "the whole store (no namespace)"
            if not yes:
                click.confirm(
                    f"Delete every key in {where} of {mask_url(store.backend.describe())}?", abort=True
                )
            removed = 0
            for key in list(_all_keys(store)):
                if store.backend.delete(store._keyspace.full_key(key, internal=True)):
                    removed += 1
            click.echo(f"deleted {removed} keys")

    @group.command("sweep")
    @clean_errors
    def sweep_command() -> None:
        """Remove expired entries now (the store also does this lazily)."""
        with app_store() as store:
            removed = batch = store.sweep(1000)
            while batch == 1000:
                batch = store.sweep(1000)
                removed += batch
            click.echo(f"swept {removed} expired entries")

    @group.command("stats")
    @clean_errors
    def stats_command() -> None:
        """Show the backend, namespace and number of keys."""
        with app_store() as store:
            user = len(store.keys(""))
            internal = len(store.keys(RESERVED_PREFIX))
            click.echo(f"backend:   {mask_url(store.backend.describe())}")
            click.echo(f"url:       {mask_url(store.url)}")
            click.echo(f"namespace: {store.namespace!r}")
            click.echo(f"keys:      {user} (+{internal} internal)")
