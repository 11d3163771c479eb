"""``sharedstate lint PATH...``: find module-level mutable state that request handlers mutate.

A module-level object lives once per process and is shared by every request that process serves, on
every thread; a production server runs several processes, each with its own copy. Mutating such an
object inside a request handler is therefore both a data race and a per-process divergence. This
linter finds those mutations statically (``ast``, nothing is imported or executed) and says which
sharedstate object to use instead.

What it looks at:

* *shared names*: module-level names bound to a mutable value: list/dict/set displays and
  comprehensions, ``dict()``/``list()``/``defaultdict()``/``Counter()``/``deque()``..., instances of
  classes, and any other call result not known to be immutable or thread-safe (locks, queues,
  framework objects, sharedstate objects); also a ``functools.lru_cache`` function's result, the
  containers of an app factory for the routes inside it, containers imported from another module of
  the project, local aliases and the elements of a container. Constants (numbers, strings, tuples,
  frozensets) are not shared names, but ``global x; x = ...`` rebinding of *any* module-level name is
  reported.
* *handlers*: functions decorated with a route or per-request hook of Flask, FastAPI, Quart,
  Starlette, Litestar, Sanic, Bottle, Dash or a Socket.IO server (not ``@patch`` from
  unittest.mock), registered with ``add_url_rule(view_func=...)``, ``Route(...)`` and the like, the
  wrappers of the decorators they carry, and the handler methods of class-based views (through
  intermediate bases, also in other modules); plus every module-level function they call in the same
  module, transitively, and the functions of other project modules they call (reported at the call).
* *mutations* inside handlers: codes SS101-SS107; SS201 (per-process caches and lazy initialisation)
  only when enabled (see :data:`CODES` and docs/tools.md).

Mutating *methods* (``append``, ``update``) count only on containers and the project's own objects:
a database client's ``update`` is not module state. Locals and parameters that shadow a module-level
name are not shared; nor are ``g``, ``request``, ``session`` and ``current_app`` (context-locals)
other than the app's ``config``/``state``. A ``# noqa`` or ``# noqa: SS1xx`` comment on the line
silences a finding. :class:`Flake8Checker` is the same check as a flake8 plugin.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tokenize
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

CODES: dict[str, str] = {
    "SS101": "module-level name rebound in a handler via `global`",
    "SS102": "augmented assignment (+=, -=, ...) to an item or attribute of a module-level object",
    "SS103": "item assignment or deletion on a module-level object",
    "SS104": "attribute assignment or deletion on a module-level object",
    "SS105": "mutating method call on a module-level object (append, update, pop, ...)",
    "SS106": "call of a method that mutates `self` (or `cls`) on a module-level instance or class",
    "SS107": "write to the application's config (`app.config`, `current_app.config`) in a handler",
    "SS201": "per-process cache or lazy initialisation in a handler (off by default: `--enable SS201`)",
    "SS900": "file cannot be read or parsed",
}
# Codes reported only when asked for: per-process caches stay correct under several workers (each
# fills its own copy), they only cost memory and may serve stale data.
OFF_BY_DEFAULT = frozenset({"SS201"})

# Decorator attribute names that make a function run per request.
ROUTE_DECORATORS = frozenset(
    {
        "route", "get", "post", "put", "patch", "delete", "head", "options", "websocket", "api_route",
        "before_request", "after_request", "teardown_request", "before_app_request", "after_app_request",
        "teardown_app_request", "teardown_appcontext", "context_processor",
        "app_context_processor", "errorhandler", "app_errorhandler", "exception_handler",
        "url_value_preprocessor", "app_url_value_preprocessor", "url_defaults", "app_url_defaults",
        "template_filter", "app_template_filter", "template_global", "app_template_global",
        "template_test", "app_template_test", "middleware", "user_loader", "request_loader",
        "header_loader", "verify_password", "verify_token",
        "before_websocket", "after_websocket", "teardown_websocket", "before_app_websocket",
        "after_app_websocket", "teardown_app_websocket",
    }
)  # fmt: skip
# Bare-name decorators (bottle/Litestar-style ``@get("/")``) count only when called with arguments, and
# not when the name comes from a mocking library (``@patch("x")`` is unittest.mock's).
BARE_ROUTE_DECORATORS = frozenset(
    {
        "route", "get", "post", "put", "patch", "delete", "head", "websocket", "websocket_listener",
        "websocket_stream",
    }
)  # fmt: skip
MOCK_MODULES = frozenset({"unittest", "mock", "pytest_mock", "pytest", "responses", "freezegun"})
# Event-handler decorators of Socket.IO-style servers: ``@socketio.on("join")``, ``@sio.event``. They
# count on receivers whose name says socket, since ``.on``/``.event`` are common words elsewhere.
EVENT_DECORATORS = frozenset({"on", "event", "on_event"})
SOCKET_RECEIVER = re.compile(r"socket|sio|^io$|^ws$", re.IGNORECASE)
# Registration calls: ``app.add_url_rule("/", view_func=f)``, ``Route("/", f)``, ``sio.on_event("x", f)``.
REGISTER_CALLS = frozenset(
    {
        "add_url_rule", "add_api_route", "add_route", "add_websocket_route", "add_api_websocket_route",
        "on_event", "Route", "WebSocketRoute", "add_resource", "register_view", "on_namespace",
        "add_get", "add_post", "add_put", "add_patch", "add_delete", "add_head", "add_view",
    }
)  # fmt: skip
# Calls whose first argument runs per request: FastAPI dependencies (``Depends(f)``, ``Security(f)``,
# in a signature, an ``Annotated[...]`` or ``dependencies=[...]``), Litestar's ``Provide(f)`` and the
# handler list of ``Litestar([...])``.
FIRST_ARGUMENT_CALLS = frozenset({"Depends", "Security", "Provide", "Litestar"})
# Keyword arguments whose value is a per-request handler or a list of them (Litestar, Starlette, ...).
HANDLER_KEYWORDS = frozenset(
    {
        "view_func", "endpoint", "handler", "route_handlers", "routes", "before_request", "after_request",
        "after_response", "before_send", "on_request", "on_response", "dependency",
    }
)  # fmt: skip
# Class-based views: these bases make the HTTP-verb methods handlers.
VIEW_BASES = frozenset(
    {
        "View", "MethodView", "Resource", "HTTPEndpoint", "HTTPMethodView", "WebSocketEndpoint",
        "Controller", "RequestHandler", "WebSocketHandler", "Namespace", "AsyncNamespace",
        "BaseHTTPMiddleware",
    }
)  # fmt: skip
VIEW_METHODS = frozenset(
    {
        "get", "post", "put", "patch", "delete", "head", "options", "dispatch_request", "open",
        "prepare", "on_finish", "dispatch",
    }
)  # fmt: skip
# ... and every ``on_*`` method of a view class: Socket.IO namespaces' ``on_join``, Tornado's
# ``on_message``/``on_close``, Starlette's ``on_receive``, Falcon's ``on_get``.
VIEW_METHOD_PREFIX = "on_"
# Decorators that make a function's result one shared object per process.
CACHE_DECORATORS = frozenset({"lru_cache", "cache", "cached", "memoize", "cached_property"})
# Methods that change a Flask/Quart config in place.
CONFIG_METHODS = frozenset(
    {"from_mapping", "from_object", "from_pyfile", "from_envvar", "from_file", "from_prefixed_env"}
)
# Kinds of shared values whose mutating-method calls (``.append``, ``.update``) are findings. Unknown
# objects (database clients, SDKs) are not: ``mongo.db.tasks.update(...)`` changes the database.
CONTAINER_KINDS = frozenset({"list", "dict", "set", "Counter", "deque", "cached result"})
# Library functions that change the container given as their first argument.
ARGUMENT_MUTATORS = frozenset(
    {
        "shuffle", "heappush", "heappop", "heapify", "heapreplace", "heappushpop", "insort",
        "insort_left", "insort_right",
    }
)  # fmt: skip
APP_FACTORIES = frozenset({"Flask", "Quart", "Sanic", "APIFlask", "FastAPI", "Starlette", "Litestar"})
# Per-process application state: Flask's ``app.config``, Starlette/FastAPI's ``app.state``, Sanic's
# ``app.ctx``.
APP_STATE_ATTRS = frozenset({"config", "state", "ctx"})

# Context-locals: one per request by design.
CONTEXT_LOCALS = frozenset({"g", "request", "session", "current_app"})

MUTATING_METHODS = frozenset(
    {
        "append", "extend", "insert", "update", "pop", "popitem", "setdefault", "clear", "remove",
        "discard", "add", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate",
        "difference_update", "intersection_update", "symmetric_difference_update", "move_to_end",
        "__setitem__", "__delitem__", "__iadd__", "subtract",
    }
)  # fmt: skip
DICT_METHODS = frozenset({"update", "pop", "popitem", "setdefault", "clear", "move_to_end", "__setitem__"})

# Calls whose result is immutable, or is never mutated in practice (loggers, compiled patterns).
IMMUTABLE_CALLS = frozenset(
    {
        "frozenset", "tuple", "str", "int", "float", "bool", "bytes", "complex", "range", "object",
        "len", "repr", "format", "hash", "getenv", "TypeVar", "ParamSpec", "NewType", "namedtuple",
        "NamedTuple", "compile", "Path", "PurePath", "PurePosixPath", "Decimal", "Fraction", "date",
        "datetime", "time", "timedelta", "timezone", "UUID", "uuid4", "uuid1", "MappingProxyType",
        "partial", "attrgetter", "itemgetter", "methodcaller", "getLogger", "signal", "Template",
        "field", "dataclass", "cast", "join", "dirname", "abspath", "basename", "environ_get",
    }
)  # fmt: skip
# Thread-safe, process-shared or per-request-by-design objects, and framework singletons whose
# methods (``db.session.add``, ``app.logger``) are not the app's own shared state.
SAFE_FACTORIES = frozenset(
    {
        "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier", "local",
        "ContextVar", "LocalProxy", "LocalStack", "Local", "Queue", "SimpleQueue", "LifoQueue",
        "PriorityQueue", "ThreadPoolExecutor", "ProcessPoolExecutor", "Flask", "Quart", "Blueprint",
        "FastAPI", "APIRouter", "Starlette", "Sanic", "Bottle", "Api", "Namespace", "SQLAlchemy",
        "create_engine", "sessionmaker", "scoped_session", "Redis", "StrictRedis", "from_url", "Cache",
        "Limiter", "LoginManager", "CSRFProtect", "Mail", "Migrate", "Celery", "Marshmallow", "Bcrypt",
        "CORS", "SocketIO", "Jinja2Templates", "HTTPBasicAuth", "HTTPTokenAuth", "OAuth", "Babel",
        "Talisman", "Compress", "Store", "SharedState",
    }
)  # fmt: skip
DICT_FACTORIES = frozenset({"dict", "defaultdict", "OrderedDict", "Counter", "ChainMap"})
LIST_FACTORIES = frozenset({"list", "bytearray", "array"})
SET_FACTORIES = frozenset({"set"})
DEQUE_FACTORIES = frozenset({"deque"})

FuncNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: ``path:line:col: code message`` (line and column are 1-based)."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def text(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


@dataclass
class Shared:
    """A module-level name bound to a mutable value."""

    name: str
    kind: str  # list | dict | Counter | set | deque | instance | object | class
    line: int
    class_name: str | None = None
    origin: str | None = None  # "state.py" when imported from another module of the project
    info: ModuleInfo | None = field(default=None, repr=False, compare=False)  # that module's


@dataclass(frozen=True)
class ImportRef:
    """Where an imported name comes from: ``from .state import ROOMS`` is ("state", 1, "ROOMS")."""

    module: str
    level: int
    attr: str | None  # None for ``import a.b as c``


@dataclass
class ModuleInfo:
    shared: dict[str, Shared] = field(default_factory=dict)
    module_names: set[str] = field(default_factory=set)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, FuncNode] = field(default_factory=dict)
    # class name -> method name -> why it mutates self ("self.param += 1 at line 7")
    mutators: dict[str, dict[str, str]] = field(default_factory=dict)
    # class name -> method name -> how it refills a per-process cache on self (SS201)
    cache_methods: dict[str, dict[str, str]] = field(default_factory=dict)
    mutators_ready: bool = False  # mutators and cache_methods are filled by _analyze_mutators
    # class name -> every method name it defines (own and module-level bases)
    methods: dict[str, dict[str, FuncNode]] = field(default_factory=dict)
    imports: dict[str, ImportRef] = field(default_factory=dict)
    # module-level functions whose result is cached (lru_cache, cache): one object per process
    cached_functions: set[str] = field(default_factory=set)
    # names bound to an application object (Flask(), Quart()): their ``.config`` is per process
    app_names: set[str] = field(default_factory=lambda: {"current_app"})
    # class name -> its class-level containers (filled on first use)
    class_containers: dict[str, dict[str, Shared]] = field(default_factory=dict)


# --- helpers -------------------------------------------------------------------------------------

# Fields that never hold child nodes worth visiting (``ctx`` is Load/Store): skipped, for speed.
_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "kind", "type_ignores"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _children(node: ast.AST) -> list[ast.AST]:
    """``ast.iter_child_nodes`` as a list, without the Load/Store context nodes: the linter's hot path."""
    kind = type(node)
    fields = _CHILD_FIELDS.get(kind)
    if fields is None:
        fields = _CHILD_FIELDS[kind] = tuple(f for f in node._fields if f not in _SKIPPED_FIELDS)
    found: list[ast.AST] = []
    for name in fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            found.extend(item for item in value if isinstance(item, ast.AST))
        elif isinstance(value, ast.AST):
            found.append(value)
    return found


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` over :func:`_children`."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(_children(current))


def _final_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _decorator_name(dec: ast.expr) -> str | None:
    """``lru_cache`` for ``@functools.lru_cache(maxsize=1)``, ``@lru_cache`` and ``@cache``."""
    return _final_name(dec.func if isinstance(dec, ast.Call) else dec)


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in _walk(node) if isinstance(n, ast.Name)}


def _root(node: ast.expr) -> ast.Name | None:
    """The Name at the bottom of ``a.b[c].d`` (None for ``f().x`` and other roots)."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node if isinstance(node, ast.Name) else None


def _short(node: ast.AST, limit: int = 40) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those under module-level if/try/with."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.With | ast.AsyncWith):
            yield from _module_statements(stmt.body)
            if isinstance(stmt, ast.If):
                yield from _module_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _module_statements(stmt.body)
            for handler in stmt.handlers:
                yield from _module_statements(handler.body)
            yield from _module_statements(stmt.orelse)
            yield from _module_statements(stmt.finalbody)


def _bound_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from _bound_names(elt)
    elif isinstance(target, ast.Starred):
        yield from _bound_names(target.value)


# --- module-level analysis -----------------------------------------------------------------------


class _Classifier:
    def __init__(self, info: ModuleInfo, safe_roots: set[str]) -> None:
        self.info = info
        self.safe_roots = safe_roots

    def _from_module(self, func: ast.expr, module: str) -> bool:
        root = _root(func)
        ref = self.info.imports.get(root.id) if root is not None else None
        return ref is not None and ref.module.split(".")[0] == module

    def _standard_container(self, func: ast.expr) -> bool:
        """Whether ``dict``/``Counter``/``deque``... here is the builtin or the standard library's."""
        root = _root(func)
        if root is None:
            return True
        ref = self.info.imports.get(root.id)
        return (
            ref is None
            or ref.module.split(".")[0] in STDLIB_CONTAINER_MODULES
            or (ref.attr is None and ref.module.split(".")[0] in STDLIB_CONTAINER_MODULES)
        )

    def kind(self, value: ast.expr) -> tuple[str | None, str | None]:
        """(kind, class name) of a module-level value; kind None means immutable, unknown or safe."""
        if isinstance(value, ast.List | ast.ListComp):
            return "list", None
        if isinstance(value, ast.Dict | ast.DictComp):
            return "dict", None
        if isinstance(value, ast.Set | ast.SetComp):
            return "set", None
        if isinstance(value, ast.BinOp):  # [0] * 10, {**a} | b
            for side in (value.left, value.right):
                kind, cls = self.kind(side)
                if kind in ("list", "dict", "set"):
                    return kind, cls
            return None, None
        if isinstance(value, ast.BoolOp | ast.IfExp):  # os.environ.get(...) or {}
            parts = value.values if isinstance(value, ast.BoolOp) else [value.body, value.orelse]
            for part in parts:
                kind, cls = self.kind(part)
                if kind is not None:
                    return kind, cls
            return None, None
        if isinstance(value, ast.Call):
            root = _root(value.func)
            if root is not None and root.id in self.safe_roots:
                return "safe", None
            name = _final_name(value.func)
            if name is None:
                return "object", None
            if name in IMMUTABLE_CALLS:
                return None, None
            if name in SAFE_FACTORIES:
                return "safe", None
            if name == "count" and self._from_module(value.func, "itertools"):
                return "iterator", None  # ids = itertools.count(1): next(ids) in a request
            if name.endswith("Cache"):  # cachetools' TTLCache, LRUCache...: a cache by construction
                return "cache", None
            if not self._standard_container(value.func):
                return "object", None  # prometheus_client.Counter is not collections.Counter
            if name == "Counter":
                return "Counter", None
            if name in DICT_FACTORIES:
                return "dict", None
            if name in LIST_FACTORIES:
                return "list", None
            if name in SET_FACTORIES:
                return "set", None
            if name in DEQUE_FACTORIES:
                return "deque", None
            if isinstance(value.func, ast.Name) and name in self.info.classes:
                return "instance", name
            return "object", None
        return None, None


STDLIB_CONTAINER_MODULES = frozenset({"collections", "typing", "array", "builtins"})


def _collect_module(tree: ast.Module) -> ModuleInfo:
    info = ModuleInfo()
    safe_roots: set[str] = set()
    for stmt in _module_statements(tree.body):
        if isinstance(stmt, ast.ClassDef):
            info.classes[stmt.name] = stmt
            info.module_names.add(stmt.name)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            info.functions[stmt.name] = stmt
            info.module_names.add(stmt.name)
            if any(_decorator_name(d) in CACHE_DECORATORS for d in stmt.decorator_list):
                info.cached_functions.add(stmt.name)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            from_sharedstate = isinstance(stmt, ast.ImportFrom) and (stmt.module or "").split(".")[0] == (
                "sharedstate"
            )
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                info.module_names.add(bound)
                if from_sharedstate or alias.name.split(".")[0] == "sharedstate":
                    safe_roots.add(bound)
                if isinstance(stmt, ast.ImportFrom):
                    info.imports[bound] = ImportRef(stmt.module or "", stmt.level, alias.name)
                elif alias.asname:
                    info.imports[bound] = ImportRef(alias.name, 0, None)
                else:
                    info.imports[bound] = ImportRef(bound, 0, None)
    classify = _Classifier(info, safe_roots)
    for stmt in _module_statements(tree.body):
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(stmt, ast.Assign):
            pairs = [(t, stmt.value) for t in stmt.targets]
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            pairs = [(stmt.target, stmt.value)]
        elif isinstance(stmt, ast.AugAssign | ast.For | ast.AsyncFor):
            info.module_names.update(_bound_names(stmt.target))
        for target, value in pairs:
            if (
                isinstance(target, ast.Tuple | ast.List)
                and isinstance(value, ast.Tuple | ast.List)
                and len(target.elts) == len(value.elts)
            ):
                pairs.extend(zip(target.elts, value.elts, strict=True))
                continue
            for name in _bound_names(target):
                info.module_names.add(name)
            if not isinstance(target, ast.Name):
                continue
            kind, cls = classify.kind(value)
            if isinstance(value, ast.Call) and _final_name(value.func) in APP_FACTORIES:
                info.app_names.add(target.id)
            if kind == "safe":
                safe_roots.add(target.id)
                info.shared.pop(target.id, None)
            elif kind is not None and target.id not in CONTEXT_LOCALS:
                # A later immutable rebinding does not undo an earlier mutable one (either may be live).
                info.shared[target.id] = Shared(target.id, kind, target.lineno, cls)
    for name in info.classes:
        info.shared.setdefault(name, Shared(name, "class", info.classes[name].lineno, name))
    _analyze_classes(info)
    return info


def _analyze_classes(info: ModuleInfo) -> None:
    """Find, per class, its methods (own and inherited from classes of the module)."""

    def methods_of(cls: str, seen: frozenset[str] = frozenset()) -> dict[str, FuncNode]:
        node = info.classes[cls]
        result: dict[str, FuncNode] = {}
        for base in reversed(node.bases):  # later bases first so earlier ones win, like the MRO
            if isinstance(base, ast.Name) and base.id in info.classes and base.id not in seen:
                result.update(methods_of(base.id, seen | {cls}))
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                result[stmt.name] = stmt
        return result

    for cls in info.classes:
        info.methods[cls] = methods_of(cls)


def _analyze_mutators(info: ModuleInfo) -> None:
    """Per class, the methods that mutate ``self``; done on first use (most modules never need it)."""
    if info.mutators_ready:
        return
    info.mutators_ready = True
    for cls, methods in info.methods.items():
        direct: dict[str, str] = {}
        caches: dict[str, str] = {}
        calls: dict[str, set[str]] = {}
        for name, fn in methods.items():
            if any(_final_name(d) == "staticmethod" for d in fn.decorator_list):
                continue
            params = fn.args.posonlyargs + fn.args.args
            if not params:
                continue
            reason, called, cache = _self_mutation(fn, params[0].arg, methods)
            if reason is not None:
                direct[name] = reason
            elif cache is not None:
                caches[name] = cache
            calls[name] = called
        changed = True
        while changed:  # fixed point over self.other() calls
            changed = False
            for name, called in calls.items():
                if name in direct:
                    continue
                for other in sorted(called):
                    if other in direct:
                        direct[name] = f"calls self.{other}(), which {direct[other]}"
                        changed = True
                        break
        info.mutators[cls] = direct
        info.cache_methods[cls] = {name: why for name, why in caches.items() if name not in direct}


def _self_attr(node: ast.expr, self_name: str) -> str | None:
    """``_tokens`` for ``self._tokens[scope]`` and ``self._tokens.update``."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == self_name
        ):
            return node.attr
        node = node.value
    return None


def _self_mutation(
    fn: FuncNode, self_name: str, methods: dict[str, FuncNode]
) -> tuple[str | None, set[str], str | None]:
    """(first direct mutation of self in ``fn`` as text, or None; names of self.methods it calls;
    first cache refresh of self as text, or None). A cache refresh is a change of ``self.x`` under an
    ``if`` that tests the object's own state (``if self.conn is None``, ``if mtime != self._mtime``,
    ``if key not in self._memo``) to a value not taken from the caller's other arguments."""
    reason: str | None = None
    cache: str | None = None
    called: set[str] = set()
    parents = {id(child): node for node in _walk(fn) for child in _children(node)}
    params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs} - {self_name}

    def on_self(target: ast.expr) -> bool:
        root = _root(target)
        return root is not None and root.id == self_name and root is not target

    def self_attrs(node: ast.AST) -> set[str]:
        return {
            n.attr
            for n in _walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == self_name
        }

    def refreshes_cache(found: ast.AST) -> bool:
        if isinstance(found, ast.Assign):
            attr, value = _self_attr(found.targets[0], self_name), found.value
        else:
            return False  # += and del change state; they never just refill it
        node: ast.AST = found
        while id(node) in parents:
            node = parents[id(node)]
            if isinstance(node, ast.If):
                tested = self_attrs(node.test)
                refilled = {t for stmt in node.body for t in self_attrs(stmt)}
                if attr in tested or tested & refilled:
                    return not (_names_in(value) & (params - _names_in(node.test)))
        return False

    for node in _walk(fn):
        found: ast.AST | None = None
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
            if any(on_self(t) for t in targets):
                found = node
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            if on_self(node.target):
                found = node
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, method = node.func.value, node.func.attr
            if isinstance(owner, ast.Name) and owner.id == self_name:
                if method in methods:
                    called.add(method)
                elif method in MUTATING_METHODS:  # a subclass of list/dict mutating itself
                    found = node
            elif method in MUTATING_METHODS and _root(owner) is not None and on_self(owner):
                found = node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == self_name
        ):
            found = node
        if found is None:
            continue
        line = getattr(found, "lineno", fn.lineno)
        text = _short(found.targets[0] if isinstance(found, ast.Delete) else found, 50)
        if isinstance(found, ast.Delete):
            text = f"del {text}"
        if refreshes_cache(found):
            cache = cache or f"refills a per-process cache ({text} at line {line})"
        else:
            reason = reason or f"mutates {self_name} ({text} at line {line})"
    return reason, called, cache


# --- the project: modules that import each other ------------------------------------------------


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    info: ModuleInfo
    source: str
    shown: str | None = None  # the path as the user gave it, for findings


def _parse_module(path: Path, source: str) -> _Module:
    tree = ast.parse(source, filename=str(path))
    return _Module(path, tree, _collect_module(tree), source)


class Project:
    """The modules of one run, parsed once each, so that a handler's call into a helper in another
    module (``from .helpers import add_member``), state imported from another module (``from .state
    import ROOMS``) and view base classes defined elsewhere are followed. Modules are found on disk
    next to the importing file (relative imports) or in its parent directories (absolute imports of
    the project's own packages); third-party imports are not found there and are not followed.
    Not thread-safe: one project per run."""

    MAX_PARENT_DIRS = 6

    def __init__(self) -> None:
        # parsed modules, the most recently used last; bounded so a large project's trees are not all
        # kept in memory at once
        self._modules: OrderedDict[Path, _Module | None] = OrderedDict()
        self._resolved: dict[tuple[Path, str, int], Path | None] = {}
        self._summaries: dict[tuple[Path, str], list[Finding]] = {}
        # (file, line of the function, ((parameter, shared name), ...)) -> findings about them
        self.param_summaries: dict[tuple[Path, int, tuple[tuple[str, str], ...]], list[Finding]] = {}

    MAX_MODULES = 256

    def add(self, path: Path, source: str) -> _Module:
        """Parse ``source`` as the module at ``path`` (raises SyntaxError), or take the module already
        parsed from the same file with the same source (when another module imported it first)."""
        key = path.resolve()
        cached = self._modules.get(key)
        if cached is not None and cached.source == source:
            self._modules.move_to_end(key)
            return cached
        module = _parse_module(path, source)
        self._remember(key, module)
        return module

    def module(self, path: Path) -> _Module | None:
        key = path.resolve()
        if key in self._modules:
            self._modules.move_to_end(key)
            return self._modules[key]
        self._remember(key, None)  # a cycle or an unreadable file resolves to nothing
        try:
            with tokenize.open(key) as fh:
                self._remember(key, _parse_module(key, fh.read()))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            pass
        return self._modules.get(key)

    def _remember(self, key: Path, module: _Module | None) -> None:
        self._modules[key] = module
        self._modules.move_to_end(key)
        while len(self._modules) > self.MAX_MODULES:
            self._modules.popitem(last=False)

    def resolve(self, importer: Path, dotted: str, level: int) -> Path | None:
        """The file of module ``dotted`` imported from ``importer`` (``level`` dots), or None."""
        key = (importer.parent, dotted, level)
        if key not in self._resolved:
            self._resolved[key] = self._find(importer, dotted, level)
        return self._resolved[key]

    def _find(self, importer: Path, dotted: str, level: int) -> Path | None:
        parts = [p for p in dotted.split(".") if p]
        if importer.name.startswith("<"):  # source given as a string: nothing on disk to follow
            return None
        if level > 0:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:
            bases = [importer.parent, *list(importer.parent.parents)[: self.MAX_PARENT_DIRS]]
        for base in bases:
            stem = base.joinpath(*parts)
            for candidate in (stem.with_suffix(".py") if parts else None, stem / "__init__.py"):
                if candidate is not None and candidate.is_file():
                    return candidate
        return None

    def imported(self, module: _Module, name: str) -> tuple[_Module, str | None] | None:
        """(module, attribute) a name imported into ``module`` refers to: (helpers, None) for a module
        (``from . import helpers``), (state, "ROOMS") for ``from .state import ROOMS``."""
        ref = module.info.imports.get(name)
        if ref is None:
            return None
        if ref.attr is None:
            path = self.resolve(module.path, ref.module, ref.level)
            target = self.module(path) if path is not None else None
            return (target, None) if target is not None else None
        sub = self.resolve(module.path, f"{ref.module}.{ref.attr}", ref.level)
        if sub is not None:
            target = self.module(sub)
            if target is not None:
                return target, None
        path = self.resolve(module.path, ref.module, ref.level)
        target = self.module(path) if path is not None else None
        return (target, ref.attr) if target is not None else None

    def is_view_class(self, module: _Module, cls: ast.ClassDef, seen: frozenset[Path | str]) -> bool:
        """Whether a class derives from a class-based view base, through intermediate bases defined in
        the same module or in other modules of the project."""
        key = f"{module.path}:{cls.name}"
        if key in seen:
            return False
        seen = seen | {key}
        for base in cls.bases:
            name = _final_name(base)
            if name in VIEW_BASES:
                return True
            if not isinstance(base, ast.Name):
                continue
            local = module.info.classes.get(base.id)
            if local is not None and local is not cls and self.is_view_class(module, local, seen):
                return True
            found = self.imported(module, base.id) if local is None else None
            if found is not None and found[1] is not None:
                other = found[0].info.classes.get(found[1])
                if other is not None and self.is_view_class(found[0], other, seen):
                    return True
        return False

    def summary(self, module: _Module, fn_name: str) -> list[Finding]:
        """Findings inside module function ``fn_name`` (and what it calls), as if a handler called it."""
        key = (module.path, fn_name)
        if key not in self._summaries:
            self._summaries[key] = []  # recursion through imports ends here
            fn = module.info.functions.get(fn_name)
            if fn is not None:
                self._summaries[key] = _check_handlers(module, self, [(fn, None)], root_is_helper=True)
        return self._summaries[key]


# --- handlers ------------------------------------------------------------------------------------


def _is_route_decorator(dec: ast.expr, info: ModuleInfo) -> bool:
    call = dec if isinstance(dec, ast.Call) else None
    target = call.func if call is not None else dec
    if call is not None and _final_name(target) == "callback" and _imports_module(info, "dash"):
        return True  # Dash: ``@app.callback(Output(...), Input(...))`` runs on every request
    if isinstance(target, ast.Attribute):
        root = _root(target.value)
        if root is not None and root.id in MOCK_MODULES | {"patch", "mocker"}:
            return False  # @mock.patch(...), @patch.object(...), @pytest.mark.patch...
        ref = info.imports.get(root.id) if root is not None else None
        if ref is not None and ref.module.split(".")[0] in MOCK_MODULES:
            return False
        if target.attr in EVENT_DECORATORS:
            receiver = _final_name(target.value) or ""
            return bool(SOCKET_RECEIVER.search(receiver))
        return target.attr in ROUTE_DECORATORS
    if isinstance(target, ast.Name) and call is not None and target.id in BARE_ROUTE_DECORATORS:
        ref = info.imports.get(target.id)
        return ref is None or ref.module.split(".")[0] not in MOCK_MODULES
    return False


def _imports_module(info: ModuleInfo, top: str) -> bool:
    return any(ref.module.split(".")[0] == top for ref in info.imports.values())


def _registered_names(node: ast.Call) -> Iterator[ast.expr]:
    """Expressions naming the views a registration call registers (``view_func=login_required(f)``)."""
    func = node.func
    name = _final_name(func)
    if name in FIRST_ARGUMENT_CALLS:
        yield from node.args[:1]
    elif name in REGISTER_CALLS:
        if name in ("add_resource", "on_namespace"):
            yield from node.args[:1]
        else:
            yield from node.args[1:3]
    elif (  # aiohttp's ``web.get("/", handler)`` route definitions
        isinstance(func, ast.Attribute)
        and func.attr in BARE_ROUTE_DECORATORS | {"view"}
        and isinstance(func.value, ast.Name)
        and func.value.id == "web"
    ):
        yield from node.args[1:2]
    elif isinstance(func, ast.Call) and isinstance(func.func, ast.Attribute):
        # ``app.route("/x")(view)`` and ``socketio.on("x")(handler)``
        attr = func.func.attr
        receiver = _final_name(func.func.value) or ""
        if attr in ROUTE_DECORATORS or (attr in EVENT_DECORATORS and SOCKET_RECEIVER.search(receiver)):
            yield from node.args[:1]
    for kw in node.keywords:
        if kw.arg in HANDLER_KEYWORDS:
            yield kw.value


def _is_view_method(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and (
        stmt.name in VIEW_METHODS or stmt.name.startswith(VIEW_METHOD_PREFIX)
    )


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement under ``body``, nested ones included (function and class bodies too)."""
    stack = list(body)
    while stack:
        stmt = stack.pop()
        yield stmt
        for name in ("body", "orelse", "finalbody"):
            value = getattr(stmt, name, None)
            if isinstance(value, list):
                stack.extend(value)
        for handler in getattr(stmt, "handlers", ()):
            stack.extend(handler.body)
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                stack.extend(case.body)


# Source text that a registration call needs (``add_url_rule(``, ``view_func=``, ``app.route("/")(f)``):
# a module without any skips the walk over all its expressions.
_REGISTRATION_HINT = re.compile(
    r"\b(?:" + "|".join(sorted(REGISTER_CALLS | FIRST_ARGUMENT_CALLS)) + r")\s*\("
    r"|\b(?:" + "|".join(sorted(HANDLER_KEYWORDS)) + r")\s*="
    r"|\)\s*\("
    r"|\bweb\.\w+\s*\("
)


class _HandlerFinder:
    """Finds a module's handlers: decorated functions, registered views, class-based view methods."""

    def __init__(self, module: _Module, project: Project) -> None:
        self.module = module
        self.project = project
        self.info = module.info

    def find(self) -> list[tuple[FuncNode, ast.ClassDef | None]]:
        found: dict[int, tuple[FuncNode, ast.ClassDef | None]] = {}
        view_classes: set[str] = set()
        for stmt in _statements(self.module.tree.body):  # functions are statements: no expressions
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                _is_route_decorator(d, self.info) for d in stmt.decorator_list
            ):
                found.setdefault(id(stmt), (stmt, None))
        for cls in self.info.classes.values():
            if any(_is_view_method(stmt) for stmt in cls.body) and self.project.is_view_class(
                self.module, cls, frozenset()
            ):
                view_classes.add(cls.name)
        if _REGISTRATION_HINT.search(self.module.source):  # else no registration call to look for
            for node in _walk(self.module.tree):
                if isinstance(node, ast.Call):
                    for expr in _registered_names(node):
                        self._register(expr, found, view_classes)
        for cls_name in view_classes:
            view = self.info.classes.get(cls_name)
            if view is None:
                continue
            for stmt in view.body:
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and _is_view_method(stmt):
                    found.setdefault(id(stmt), (stmt, view))
        return sorted(found.values(), key=lambda item: (item[0].lineno, item[0].col_offset))

    def _register(
        self, expr: ast.expr, found: dict[int, tuple[FuncNode, ast.ClassDef | None]], views: set[str]
    ) -> None:
        """Every module function or class named in a registration expression: ``login_required(f)``
        registers ``f``; ``rate_limited(f)`` also runs ``rate_limited``'s wrapper per request;
        ``UserAPI.as_view("users")`` registers the view class."""
        wrappers = {
            node.func.id
            for node in _walk(expr)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        for node in _walk(expr):
            if not isinstance(node, ast.Name):
                continue
            fn = self.info.functions.get(node.id)
            if fn is not None and node.id in wrappers:
                for inner in _wrapper_functions(fn):
                    found.setdefault(id(inner), (inner, None))
            elif fn is not None:
                found.setdefault(id(fn), (fn, None))
            elif node.id in self.info.classes:
                views.add(node.id)


# --- function analysis ---------------------------------------------------------------------------


def _scope_names(fn: FuncNode | ast.Lambda) -> tuple[set[str], set[str]]:
    """(local names, names declared ``global``) of a function, not looking into nested scopes."""
    args = fn.args
    local = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    if args.vararg:
        local.add(args.vararg.arg)
    if args.kwarg:
        local.add(args.kwarg.arg)
    declared_global: set[str] = set()
    if isinstance(fn, ast.Lambda):
        return local, declared_global
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            local.update(node.names)  # an enclosing function's name: not module-level
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            local.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.alias):
            local.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            local.add(node.rest)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            local.add(node.name)
            stack.extend(getattr(node, "decorator_list", []))
            continue  # its body is another scope
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            continue
        stack.extend(_children(node))
    return local - declared_global, declared_global


@dataclass
class _Scope:
    shadowed: set[str]
    declared_global: set[str]


def _own_statements(fn: FuncNode) -> Iterator[ast.AST]:
    """Nodes of a function body, not looking into nested functions, classes or lambdas."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(_children(node))


def _nonlocal_names(own: list[ast.AST]) -> set[str]:
    return {name for node in own if isinstance(node, ast.Nonlocal) for name in node.names}


# Methods that return a part of a container, not a copy: ``ROOMS.get(room).append(sid)`` changes ROOMS.
ACCESSOR_METHODS = frozenset({"get", "setdefault"})


def _step_in(node: ast.expr) -> ast.expr | None:
    """One step toward the root of ``a.b[c].get(k)``; None at the root."""
    if isinstance(node, ast.Attribute | ast.Subscript):
        return node.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ACCESSOR_METHODS
    ):
        return node.func.value
    return None


def _root_and_hops(node: ast.expr) -> tuple[ast.expr, int]:
    """The root of an access chain and the number of steps to it (``a[0]["x"]``: a, 2)."""
    hops = 0
    inner = _step_in(node)
    while inner is not None:
        node, hops = inner, hops + 1
        inner = _step_in(node)
    return node, hops


def _through_accessor(node: ast.expr) -> bool:
    inner: ast.expr | None = node
    while inner is not None:
        if isinstance(inner, ast.Call):
            return True
        inner = _step_in(inner)
    return False


def _is_view_expression(node: ast.expr) -> bool:
    """``ROOMS``, ``STATE["players"]``, ``JOBS.get(k)``: the same object, not a copy (``ITEMS[a:b]``)
    or a call result."""
    inner: ast.expr | None = node
    while inner is not None:
        if isinstance(inner, ast.Subscript) and isinstance(inner.slice, ast.Slice):
            return False
        node, inner = inner, _step_in(inner)
    return isinstance(node, ast.Name)


def _element_source(node: ast.expr) -> ast.expr | None:
    """The container whose *elements* a value holds: ``tasks`` for ``[t for t in tasks if ...]`` (a new
    list of the same elements)."""
    if isinstance(node, ast.ListComp) and _is_element_comprehension(node):
        return node.generators[0].iter
    return None


def _is_element_comprehension(node: ast.ListComp | ast.GeneratorExp) -> bool:
    gen = node.generators[0]
    return (
        len(node.generators) == 1
        and isinstance(gen.target, ast.Name)
        and isinstance(node.elt, ast.Name)
        and node.elt.id == gen.target.id
    )


def _loop_elements(node: ast.For | ast.AsyncFor) -> tuple[str, ast.expr] | None:
    """(loop variable, container) when a loop's variable is each element of a container in turn:
    ``for user in users``, ``for job in JOBS.values()``, ``for k, job in JOBS.items()``,
    ``for i, user in enumerate(users)``."""
    target, source = node.target, node.iter
    if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) and not source.args:
        if source.func.attr == "values" and isinstance(target, ast.Name):
            return target.id, source.func.value
        if source.func.attr == "items" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            second = target.elts[1]
            return (second.id, source.func.value) if isinstance(second, ast.Name) else None
        return None
    if (
        isinstance(source, ast.Call)
        and isinstance(source.func, ast.Name)
        and source.func.id == "enumerate"
        and source.args
        and isinstance(target, ast.Tuple)
        and len(target.elts) == 2
        and isinstance(target.elts[1], ast.Name)
    ):
        return target.elts[1].id, source.args[0]
    if isinstance(target, ast.Name):
        return target.id, source
    return None


REQUEST_NAMES = frozenset({"request", "websocket", "session"})


class _FunctionChecker:
    """Walks one handler (or function reached from one) and records mutations of shared names."""

    def __init__(
        self,
        module: _Module,
        project: Project,
        context: str,
        view: ast.ClassDef | None,
        enclosing: dict[str, Shared],
    ) -> None:
        self.module = module
        self.project = project
        self.info = module.info
        self.path = module.shown or str(module.path)
        self.context = context
        self.view = view
        self.enclosing = enclosing  # an app factory's locals, for routes defined inside it
        self.findings: list[Finding] = []
        self.callees: list[tuple[FuncNode, ast.ClassDef | None]] = []
        self.aliases: dict[str, Shared] = {}
        self.nonlocal_names: set[str] = set()
        self.tainted: set[str] = set(REQUEST_NAMES)
        self.guards: list[ast.expr] = []  # tests of the enclosing ifs, innermost last
        self.derived: dict[str, set[str]] = {}  # local -> the names its value was computed from
        self.element_lists: dict[str, Shared] = {}  # local lists of a shared container's elements
        self.only: dict[str, Shared] | None = None  # parameters bound to shared containers
        self.computed: set[str] = set()  # locals assigned from a call (``value = compute(key)``)
        self.rebound: set[str] = set()  # names assigned in the body (a parameter given a new value)

    def check(self, fn: FuncNode) -> None:
        local, declared = _scope_names(fn)
        own = list(_own_statements(fn))  # one walk of the body for the passes below
        self.nonlocal_names = _nonlocal_names(own)
        scope = _Scope(local, declared)
        self._collect_aliases(own, scope)
        self._visit_body(fn.body, scope)

    # scope handling

    def _collect_aliases(self, own: list[ast.AST], scope: _Scope) -> None:
        """Locals bound to a shared object itself (``rooms = ROOMS``, ``players = STATE["players"]``,
        ``cfg = get_settings()``); locals read from anything (for the cache guards); and locals
        computed from the request (a value taken from the request is data, not a cache)."""
        assigned: dict[str, list[ast.expr]] = {}
        assigns: list[ast.Assign] = []
        for node in own:
            if isinstance(node, ast.Assign):
                assigns.append(node)
                for target in node.targets:
                    for name in _bound_names(target):
                        assigned.setdefault(name, []).append(
                            node.value if isinstance(target, ast.Name) else target
                        )
                        self.derived.setdefault(name, set()).update(_names_in(node.value))
                        if any(isinstance(n, ast.Call) for n in _walk(node.value)):
                            self.computed.add(name)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor | ast.NamedExpr):
                for name in _bound_names(node.target):
                    assigned.setdefault(name, []).append(node.target)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                for name in _bound_names(node.optional_vars):
                    assigned.setdefault(name, []).append(node.optional_vars)
        changed = True
        while changed:
            changed = False
            for node in assigns:
                if _names_in(node.value) & self.tainted:
                    names = {n for t in node.targets for n in _bound_names(t)} - self.tainted
                    if names:
                        self.tainted |= names
                        changed = True
        self.rebound = set(assigned)
        loops = {
            found[0]: found[1]
            for node in own
            if isinstance(node, ast.For | ast.AsyncFor) and (found := _loop_elements(node)) is not None
        }
        for name, values in assigned.items():
            value = values[0]
            if len(values) != 1 or name in scope.declared_global:
                continue
            if name in loops:  # ``for user in users``: each element in turn, of a container
                looped = self._expr_shared(loops[name], scope, allow_root=True)
                if looped is not None and looped.kind in CONTAINER_KINDS:
                    self.aliases[name] = looped
                continue
            elements = _element_source(value)
            if elements is not None:  # ``task = [t for t in tasks if ...]``: a new list, shared elements
                shared = self._expr_shared(elements, scope, allow_root=True)
                if shared is not None and shared.kind in CONTAINER_KINDS:
                    self.element_lists[name] = shared
                continue
            if (  # ``next(t for t in tasks if ...)``: one element itself
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "next"
                and value.args
                and isinstance(value.args[0], ast.GeneratorExp)
                and _is_element_comprehension(value.args[0])
            ):
                value = value.args[0].generators[0].iter
            if not _is_view_expression(value) and self._cached_call_root(value, scope) is None:
                continue
            shared = self._expr_shared(value, scope, allow_root=True)
            if shared is not None:
                self.aliases[name] = shared

    def _shared(self, name: str, scope: _Scope) -> Shared | None:
        if name in self.aliases:
            return self.aliases[name]
        if self.only is not None:  # checking a helper for what it does to its arguments
            return None if name in self.rebound else self.only.get(name)
        if name in CONTEXT_LOCALS or (name in scope.shadowed and name not in scope.declared_global):
            return None
        if name in self.enclosing:
            return self.enclosing[name]
        shared = self.info.shared.get(name)
        if shared is None and name in self.info.imports:
            shared = self._imported_shared(name)
        return shared

    def _imported_shared(self, name: str) -> Shared | None:
        found = self.project.imported(self.module, name)
        if found is None or found[1] is None:
            return None
        other, attr = found[0], found[1]
        shared = other.info.shared.get(attr)
        if shared is None or shared.kind in ("object", "class"):
            return None  # unknown objects and classes of other modules: too little is known
        return Shared(name, shared.kind, shared.line, shared.class_name, other.path.name, other.info)

    def _cached_call_root(self, node: ast.expr, scope: _Scope) -> str | None:
        """``get_settings`` for ``get_settings()["theme"]`` when get_settings is lru_cache'd."""
        node = _root_and_hops(node)[0]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.info.cached_functions
            and node.func.id not in scope.shadowed
        ):
            return node.func.id
        return None

    def _expr_shared(self, node: ast.expr, scope: _Scope, allow_root: bool = False) -> Shared | None:
        """The shared object an expression's root is (None if it is not shared). Unless
        ``allow_root``, the expression must reach into the root (``x[k]``, ``x.a``), not be it."""
        root, hops = _root_and_hops(node)
        reached = hops if allow_root else hops - 1  # steps into the root of the object changed
        if reached < 0:
            return None
        cached = self._cached_call_root(root, scope)
        if cached is not None:
            return Shared(f"{cached}()", "cached result", self.info.functions[cached].lineno)
        if not isinstance(root, ast.Name):
            return None
        if root.id == "self" and self.view is not None and reached >= 1:
            return self._class_level(node)
        if root.id in self.element_lists and root.id not in self.aliases:
            # a new list holding shared elements: only changes to an element count
            return self.element_lists[root.id] if reached >= 1 else None
        shared = self._shared(root.id, scope)
        if shared is not None and shared.kind not in CONTAINER_KINDS and _through_accessor(node):
            return None  # ``User.query.get(id)``: a method of an object, not a container's item
        return shared

    def _visit_body(self, nodes: Iterable[ast.AST], scope: _Scope) -> None:
        for node in nodes:
            self._visit(node, scope)

    def _visit(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # A closure runs during the request too; the enclosing locals still shadow module names.
            local, declared = _scope_names(node)
            inner = _Scope((scope.shadowed | local) - declared, declared)
            body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
            self._visit_body(body, inner)
            return
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            names = {n for gen in node.generators for n in _bound_names(gen.target)}
            inner = _Scope(scope.shadowed | names, scope.declared_global - names)
            self._visit_body(_children(node), inner)
            return
        if isinstance(node, ast.If | ast.While):
            self._visit(node.test, scope)
            self.guards.append(node.test)
            self._visit_body(node.body, scope)
            self.guards.pop()
            self._visit_body(node.orelse, scope)
            return
        self._inspect(node, scope)
        self._visit_body(_children(node), scope)

    # the checks

    def _add(self, node: ast.AST, code: str, message: str) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        self.findings.append(Finding(self.path, line, col, code, f"{message} [{self.context}]"))

    def _guarded_by(self, name: str, key: ast.expr | None) -> bool:
        """Whether an enclosing ``if`` tests ``name`` (or a local read from it), and the key too."""
        related = {name} | {alias for alias, shared in self.aliases.items() if shared.name == name}
        related |= {local for local, sources in self.derived.items() if sources & related}
        for test in self.guards:
            names = _names_in(test)
            for local in list(names):
                names |= self.derived.get(local, set())
            if names & related and (key is None or _names_in(key) <= names):
                return True
        return False

    def _cache_fill(self, name: str, value: ast.expr, key: ast.expr | None) -> bool:
        """The per-process cache idioms: ``if X is None: X = build()`` and ``if k not in X: X[k] =
        compute(k)``, where the value is computed (a call), not taken from the request."""
        names = _names_in(value)
        if not any(isinstance(n, ast.Call) for n in _walk(value)) and not names & self.computed:
            return False
        if names & (self.tainted | {name}):
            return False
        return self._guarded_by(name, key)

    def _config_target(self, node: ast.expr) -> str | None:
        """``current_app.config`` for ``current_app.config["X"]``, ``app.state`` for
        ``request.app.state.x``: the application's config or state, one per process."""
        while isinstance(node, ast.Subscript | ast.Attribute):
            value = node.value
            if isinstance(node, ast.Attribute) and node.attr in APP_STATE_ATTRS:
                if isinstance(value, ast.Name) and value.id in self.info.app_names:
                    return f"{value.id}.{node.attr}"
                if (  # request.app.state, websocket.app.state
                    isinstance(value, ast.Attribute)
                    and value.attr == "app"
                    and isinstance(value.value, ast.Name)
                    and value.value.id in REQUEST_NAMES
                ):
                    return f"app.{node.attr}"
            node = value
        return None

    def _config_write(self, node: ast.AST, target: ast.expr) -> bool:
        config = self._config_target(target)
        if config is None:
            return False
        advice = (
            "keep runtime settings in the store: store.dict('config')[key] = value"
            if config.endswith(".config")
            else "keep it in the store: store.counter(name) / store.dict(name)"
        )
        self._add(
            node,
            "SS107",
            f"{_short(target)} is changed in a request: {config} is one object per process, so only "
            f"the worker that served this request sees the change; {advice}",
        )
        return True

    def _inspect(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._store(target, scope, node, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._store(node.target, scope, node, node.value)
        elif isinstance(node, ast.AugAssign):
            self._augassign(node, scope)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            self._store(node.target, scope, node, None)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._store(node.optional_vars, scope, node, None)
        elif isinstance(node, ast.NamedExpr):
            self._store(node.target, scope, node, node.value)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self._delete(target, scope)
        elif isinstance(node, ast.Call):
            self._call(node, scope)

    def _rebinds(self, name: str, scope: _Scope) -> str | None:
        """How a handler rebinds a name that outlives the request: "global" or "nonlocal", else None."""
        if name in scope.declared_global:
            return "global"
        if name in self.nonlocal_names:
            return "nonlocal"
        return None

    def _store(self, target: ast.expr, scope: _Scope, stmt: ast.AST, value: ast.expr | None) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._store(elt, scope, stmt, None)
        elif isinstance(target, ast.Starred):
            self._store(target.value, scope, stmt, None)
        elif isinstance(target, ast.Name):
            how = self._rebinds(target.id, scope)
            if how is None:
                return
            if (
                value is not None
                and isinstance(stmt, ast.Assign)
                and self._cache_fill(target.id, value, None)
            ):
                self._add(
                    target,
                    "SS201",
                    f"lazy initialisation of {how} {target.id!r}: each process builds its own copy once "
                    f"(correct if it is a cache of something every process can rebuild)",
                )
                return
            self._add(
                target,
                "SS101",
                f"handler rebinds {how} {target.id!r}: each process (and each reload) has its own "
                f"copy; use store.set({target.id!r}, ...) / store.update({target.id!r}, fn)",
            )
        elif isinstance(target, ast.Subscript | ast.Attribute):
            if self._config_write(target, target):
                return
            shared = self._expr_shared(target, scope)
            if shared is None:
                return
            if isinstance(target, ast.Subscript) and (
                shared.kind == "cache"
                or (value is not None and self._cache_fill(shared.name, value, target.slice))
            ):
                self._add(
                    target,
                    "SS201",
                    f"per-process memo {_short(target)} = ... on module-level {shared.kind} "
                    f"{shared.name!r}: each process fills its own copy (correct if the value can be "
                    f"recomputed; bound its size, or use store.cached(...) to share it)",
                )
                return
            if isinstance(target, ast.Subscript):
                self._add(
                    target,
                    "SS103",
                    f"item assignment {_short(target)} = ... on {_describe(shared)}; "
                    f"{_item_advice(shared, target)}",
                )
            else:
                self._add(
                    target,
                    "SS104",
                    f"attribute assignment {_short(target)} = ... on {_describe(shared)}; "
                    f"use `with store.edit({shared.name!r}) as obj:`",
                )

    def _delete(self, target: ast.expr, scope: _Scope) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._delete(elt, scope)
            return
        if isinstance(target, ast.Name):
            how = self._rebinds(target.id, scope)
            if how is not None:
                self._add(target, "SS101", f"handler deletes {how} {target.id!r}; use store.delete(...)")
            return
        if self._config_write(target, target):
            return
        shared = self._expr_shared(target, scope)
        if shared is None:
            return
        code = "SS103" if isinstance(target, ast.Subscript) else "SS104"
        advice = (
            f"use store.dict({shared.name!r}).pop(key, None)"
            if code == "SS103"
            else f"use `with store.edit({shared.name!r}) as obj:`"
        )
        self._add(target, code, f"del {_short(target)} on {_describe(shared)}; {advice}")

    def _augassign(self, node: ast.AugAssign, scope: _Scope) -> None:
        target = node.target
        numeric = isinstance(node.op, ast.Add | ast.Sub)
        if isinstance(target, ast.Name):
            how = self._rebinds(target.id, scope)
            if how is not None:
                advice = (
                    f"use store.counter({target.id!r}).incr()"
                    if numeric
                    else f"use store.update({target.id!r}, fn)"
                )
                self._add(
                    target,
                    "SS101",
                    f"`{_short(node)}` on {how} {target.id!r} is a read-modify-write race (lost updates, "
                    f"duplicate values) and per-process; {advice}",
                )
            return
        if self._config_write(node, target):
            return
        shared = self._expr_shared(target, scope)
        if shared is None:
            return
        if isinstance(target, ast.Subscript) and numeric:
            advice = f"use store.dict({shared.name!r}).incr(key)"
        elif numeric:
            advice = (
                f"use store.counter({_short(target)!r}).incr() or `with store.edit({shared.name!r}) as obj:`"
            )
        else:
            advice = f"use `with store.edit({shared.name!r}) as obj:` or store.update({shared.name!r}, fn)"
        self._add(
            target,
            "SS102",
            f"`{_short(node)}` on {_describe(shared)} is a read-modify-write race; {advice}",
        )

    def _call(self, node: ast.Call, scope: _Scope) -> None:
        func = node.func
        if self._argument_mutation(node, scope):
            return
        if isinstance(func, ast.Name):
            if func.id in scope.shadowed:
                return
            if func.id in self.info.functions:
                self.callees.append((self.info.functions[func.id], None))
                self._passed_state(node, self.info.functions[func.id], scope)
            elif func.id in self.info.imports:
                self._imported_call(node, func.id, None)
            return
        if not isinstance(func, ast.Attribute):
            return
        owner, method = func.value, func.attr
        if (
            isinstance(owner, ast.Name)
            and owner.id not in scope.shadowed
            and owner.id in self.info.imports
            and self._imported_call(node, owner.id, method)
        ):
            return
        if (
            self.view is not None
            and isinstance(owner, ast.Name)
            and owner.id == "self"
            and method in self.info.methods.get(self.view.name, {})
        ):
            self.callees.append((self.info.methods[self.view.name][method], self.view))
            return
        if method in MUTATING_METHODS | CONFIG_METHODS and self._config_write(node, func):
            return
        shared = self._expr_shared(owner, scope, allow_root=True)
        if shared is None:
            return
        if (
            isinstance(owner, ast.Name)
            and shared.class_name is not None
            and self._method_call(node, shared, method)
        ):
            return
        if isinstance(owner, ast.Call) and _final_name(owner.func) in MUTATING_METHODS:
            return  # ROOMS.setdefault(k, []).append(v): one change, reported at the setdefault
        if method in MUTATING_METHODS and self._mutable_receiver(shared, owner):
            self._add(
                node,
                "SS105",
                f"{_short(func)}() mutates {_describe(shared)}; {_method_advice(shared, method)}",
            )

    def _class_level(self, node: ast.expr) -> Shared | None:
        """``self.rendered[k] = v`` in a class-based view where ``rendered = {}`` is a class attribute:
        one dict shared by every instance (views are instantiated per request)."""
        assert self.view is not None
        while isinstance(node, ast.Attribute | ast.Subscript) and not (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        ):
            node = node.value
        if not isinstance(node, ast.Attribute):
            return None
        return _class_containers(self.info, self.view).get(node.attr)

    def _argument_mutation(self, node: ast.Call, scope: _Scope) -> bool:
        """``random.shuffle(DECK)``, ``heapq.heappush(QUEUE, x)``, ``next(ids)`` on an
        ``itertools.count()``, ``setattr(CONFIG, k, v)``: library functions that change their first
        argument."""
        name = _final_name(node.func)
        if name is None or not node.args or not _is_view_expression(node.args[0]):
            return False
        if isinstance(node.func, ast.Name) and node.func.id in scope.shadowed | set(self.info.functions):
            return False
        shared = self._expr_shared(node.args[0], scope, allow_root=True)
        if shared is None:
            return False
        target = _short(node.args[0])
        if name in ("setattr", "delattr") and isinstance(node.func, ast.Name):
            self._add(
                node,
                "SS104",
                f"{name}({target}, ...) on {_describe(shared)}; "
                f"use `with store.edit({shared.name!r}) as obj:`",
            )
            return True
        if name == "next" and isinstance(node.func, ast.Name) and shared.kind == "iterator":
            self._add(
                node,
                "SS105",
                f"next({target}) advances {_describe(shared)}: each process counts on its own, so two "
                f"workers hand out the same numbers; use store.counter({shared.name!r}).incr()",
            )
            return True
        if name in ARGUMENT_MUTATORS and shared.kind in CONTAINER_KINDS:
            self._add(
                node,
                "SS105",
                f"{_short(node.func)}({target}, ...) changes {_describe(shared)}; "
                f"{_method_advice(shared, name)}",
            )
            return True
        return False

    def _passed_state(self, node: ast.Call, callee: FuncNode, scope: _Scope) -> None:
        """``add_item(ITEMS, item)`` where ``add_item(store, item)`` does ``store.append(item)``: the
        helper changes the container it is given, reported here, at the call."""
        params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
        passed: dict[str, Shared] = {}
        pairs = list(zip(params, node.args, strict=False))
        pairs += [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
        for param, arg in pairs:
            if isinstance(arg, ast.Starred):
                break
            shared = self._expr_shared(arg, scope, allow_root=True) if _is_view_expression(arg) else None
            if shared is not None and shared.kind in CONTAINER_KINDS:
                passed[param] = shared
        if not passed:
            return
        key = (self.module.path, callee.lineno, tuple(sorted((k, v.name) for k, v in passed.items())))
        inner = self.project.param_summaries.get(key)
        if inner is None:
            self.project.param_summaries[key] = []  # recursion ends here
            checker = _FunctionChecker(self.module, self.project, f"in {callee.name!r}", None, {})
            checker.only = passed
            checker.check(callee)
            inner = self.project.param_summaries[key] = sorted(checker.findings)
        if inner:
            first = inner[0]
            core = first.message.rsplit(" [", 1)[0]
            self._add(
                node,
                first.code,
                f"{_short(node.func)}() changes what it is given at line {first.line}: {core}",
            )

    def _mutable_receiver(self, shared: Shared, owner: ast.expr) -> bool:
        """Containers, and attributes of the project's own instances and classes (``Stats.by_path``);
        not unknown objects such as database clients, whose ``update`` is their own business."""
        if shared.kind in CONTAINER_KINDS:
            return True
        return shared.kind in ("instance", "class") and not isinstance(owner, ast.Name)

    def _method_call(self, node: ast.Call, shared: Shared, method: str) -> bool:
        """``obj.m()`` on a module-level instance (or ``Cls.m()``) of a class of this module: SS106 if
        ``m`` mutates self/cls, else ``m`` is followed. False if the class has no such method."""
        assert shared.class_name is not None
        info = shared.info or self.info  # an instance imported from another module: its class there
        methods = info.methods.get(shared.class_name, {})
        if method not in methods:
            return False
        _analyze_mutators(info)
        fn = methods[method]
        why = info.mutators.get(shared.class_name, {}).get(method)
        is_classmethod = any(_final_name(d) == "classmethod" for d in fn.decorator_list)
        if why is not None and (shared.kind != "class" or is_classmethod):
            what = "class" if shared.kind == "class" else f"{shared.class_name} instance"
            self._add(
                node,
                "SS106",
                f"{shared.name}.{method}() on module-level {what}: "
                f"{shared.class_name}.{method}() {why}; keep the state in the store: "
                f"`with store.edit({shared.name!r}) as obj:` or store.counter(...)",
            )
        elif why is None:
            refill = info.cache_methods.get(shared.class_name, {}).get(method)
            if refill is not None:
                self._add(
                    node,
                    "SS201",
                    f"{shared.name}.{method}() {refill}: each process keeps its own copy (correct if "
                    f"every process can rebuild it)",
                )
            if info is self.info:  # it may still change module state: follow it
                self.callees.append((fn, None))
        return True

    def _imported_call(self, node: ast.Call, name: str, method: str | None) -> bool:
        """A call of a function of another project module (``add_member(...)``, ``helpers.f(...)``):
        reported here, at the call, if that function changes module-level state."""
        found = self.project.imported(self.module, name)
        if found is None:
            return False
        other, attr = found
        fn_name = attr if method is None else (method if attr is None else None)
        if fn_name is None or fn_name not in other.info.functions:
            return False
        inner = self.project.summary(other, fn_name)
        if not inner:
            return True
        first = min(inner, key=lambda f: (f.code in OFF_BY_DEFAULT, f.line))
        code = first.code
        where = f"{Path(first.path).name}:{first.line}"
        core = first.message.rsplit(" [", 1)[0]
        self._add(node, code, f"{_short(node.func)}() changes module-level state in {where}: {core}")
        return True


def _class_containers(info: ModuleInfo, cls: ast.ClassDef) -> dict[str, Shared]:
    """Class attributes bound to containers (``rendered = {}``) that no method rebinds on ``self``."""
    cached = info.class_containers.get(cls.name)
    if cached is not None:
        return cached
    classify = _Classifier(info, set())
    found: dict[str, Shared] = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            kind, _ = classify.kind(stmt.value)
            if kind in CONTAINER_KINDS:
                name = stmt.targets[0].id
                found[name] = Shared(f"{cls.name}.{name}", kind, stmt.lineno)
    for node in _walk(cls):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            found.pop(node.attr, None)  # an instance attribute hides the class one
    info.class_containers[cls.name] = found
    return found


def _describe(shared: Shared) -> str:
    where = f" (from {shared.origin})" if shared.origin else ""
    if shared.kind == "cached result":
        return f"the cached result of {shared.name}, one object per process{where}"
    return f"module-level {shared.kind} {shared.name!r}{where}"


def _item_advice(shared: Shared, target: ast.Subscript) -> str:
    if shared.kind in ("dict", "Counter") and isinstance(target.value, ast.Name):
        return f"use store.dict({shared.name!r})[key] = value"
    return f"use `with store.edit({shared.name!r}) as obj:`"


def _method_advice(shared: Shared, method: str) -> str:
    if shared.kind == "Counter" and method in ("update", "subtract"):
        return f"use store.dict({shared.name!r}).incr(key, by)"
    if shared.kind == "dict" and method in DICT_METHODS:
        return f"use store.dict({shared.name!r}).{method if method != '__setitem__' else 'update_item'}(...)"
    return (
        f"use store.update({shared.name!r}, fn) or `with store.edit({shared.name!r}) as obj:`; "
        f"store.lock({shared.name!r}) for longer sequences"
    )


# --- files ---------------------------------------------------------------------------------------

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


def _noqa_lines(source: str) -> dict[int, set[str] | None]:
    """Line -> codes silenced there (None: all codes)."""
    result: dict[int, set[str] | None] = {}
    for lineno, line in enumerate(source.splitlines(), 1):
        if "noqa" not in line:
            continue
        match = _NOQA.search(line)
        if match is None:
            continue
        codes = match.group("codes")
        result[lineno] = None if codes is None else {c.upper() for c in re.split(r"[\s,]+", codes) if c}
    return result


def _enclosing_functions(tree: ast.Module) -> dict[int, FuncNode]:
    """id(nested function) -> the function it is defined in (one pass over the tree)."""
    parents: dict[int, FuncNode] = {}
    stack: list[tuple[ast.AST, FuncNode | None]] = [(tree, None)]
    while stack:
        node, current = stack.pop()
        for child in _children(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if current is not None:
                    parents[id(child)] = current
                stack.append((child, child))
            else:
                stack.append((child, current))
    return parents


def _factory_state(module: _Module, fn: FuncNode, parents: dict[int, FuncNode]) -> dict[str, Shared]:
    """Mutable locals of the functions enclosing a nested handler (an app factory's ``visits = {}``):
    they live as long as the app, one copy per process, like module-level objects."""
    state: dict[str, Shared] = {}
    classify = _Classifier(module.info, set())
    outer = parents.get(id(fn))
    while outer is not None:
        for node in _own_statements(outer):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                kind, cls = classify.kind(node.value)
                name = node.targets[0].id
                if kind in CONTAINER_KINDS and name not in state:
                    state[name] = Shared(name, kind, node.lineno, cls, f"{outer.name}()")
        outer = parents.get(id(outer))
    return state


def _wrapper_functions(decorator: FuncNode) -> Iterator[FuncNode]:
    """The functions a decorator defines (its wrappers): they run on every request, while the
    decorator's own body runs once, when it is applied (``ACTIONS[fn.__name__] = fn`` is import time)."""
    for node in _own_statements(decorator):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _decorator_functions(fn: FuncNode, info: ModuleInfo) -> Iterator[tuple[FuncNode, FuncNode]]:
    """(decorator, wrapper) for the module functions decorating a handler."""
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Name) and target.id in info.functions:
            decorator = info.functions[target.id]
            if isinstance(dec, ast.Call):  # @retry(3): the decorator factory's result decorates
                for inner in _wrapper_functions(decorator):
                    yield from ((decorator, w) for w in _wrapper_functions(inner))
            yield from ((decorator, w) for w in _wrapper_functions(decorator))


def _check_handlers(
    module: _Module,
    project: Project,
    roots: list[tuple[FuncNode, ast.ClassDef | None]],
    root_is_helper: bool = False,
    honour_noqa: bool = True,
) -> list[Finding]:
    """Findings in ``roots`` and in every function of the module they reach."""
    parents: dict[int, FuncNode] | None = None

    def enclosing_state(fn: FuncNode) -> dict[str, Shared]:
        nonlocal parents
        if root_is_helper or fn.col_offset == 0:
            return {}
        if parents is None:
            parents = _enclosing_functions(module.tree)
        return _factory_state(module, fn, parents)

    findings: set[Finding] = set()
    visited: set[int] = set()
    for root, view in roots:
        label = f"in {root.name!r}" if root_is_helper else f"in handler {root.name!r}"
        caller = f"{root.name!r}" if root_is_helper else f"handler {root.name!r}"
        enclosing = enclosing_state(root) if view is None else {}
        queue: list[tuple[FuncNode, ast.ClassDef | None, str, dict[str, Shared]]] = [
            (root, view, label, enclosing)
        ]
        queue += [
            (
                wrapper,
                None,
                f"in {wrapper.name!r} of decorator {d.name!r} of {root.name!r}",
                enclosing_state(wrapper),
            )
            for d, wrapper in _decorator_functions(root, module.info)
        ]
        while queue:
            fn, fn_view, context, fn_enclosing = queue.pop(0)
            if id(fn) in visited:
                continue
            visited.add(id(fn))
            checker = _FunctionChecker(module, project, context, fn_view, fn_enclosing)
            checker.check(fn)
            findings.update(checker.findings)
            for callee, callee_view in checker.callees:
                queue.append((callee, callee_view, f"in {callee.name!r}, called from {caller}", {}))
    if not honour_noqa:  # flake8 applies the noqa comments itself
        return sorted(findings)
    noqa = _noqa_lines(module.source)
    kept = []
    for f in findings:
        silenced = noqa.get(f.line, set())
        if silenced is None or f.code in silenced:
            continue
        kept.append(f)
    return sorted(kept)


def _lint_module(module: _Module, project: Project, enabled: frozenset[str]) -> list[Finding]:
    handlers = _HandlerFinder(module, project).find()
    findings = _check_handlers(module, project, handlers)
    return [f for f in findings if f.code not in OFF_BY_DEFAULT or f.code in enabled]


def lint_source(
    source: str,
    path: str = "<string>",
    project: Project | None = None,
    enable: Iterable[str] = (),
) -> list[Finding]:
    """Lint one module's source. A syntax error is returned as an SS900 finding. ``enable`` turns on
    codes that are off by default (SS201). Imports of other project modules are resolved next to
    ``path`` on disk."""
    project = project if project is not None else Project()
    try:
        module = project.add(Path(path), source)
    except SyntaxError as exc:
        return [Finding(path, exc.lineno or 1, exc.offset or 1, "SS900", f"syntax error: {exc.msg}")]
    except ValueError as exc:  # source code string cannot contain null bytes
        return [Finding(path, 1, 1, "SS900", f"cannot parse: {exc}")]
    module.shown = path  # findings carry the path as given
    return _lint_module(module, project, frozenset(enable))


def lint_path(path: Path, project: Project | None = None, enable: Iterable[str] = ()) -> list[Finding]:
    """Lint one file; an unreadable or undecodable file is an SS900 finding."""
    shown = str(path)
    try:
        with tokenize.open(path) as fh:  # honours PEP 263 encoding declarations
            source = fh.read()
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return [Finding(shown, 1, 1, "SS900", f"cannot read file: {exc}")]
    return lint_source(source, shown, project, enable)


# --- flake8 --------------------------------------------------------------------------------------

_FLAKE8_PROJECT: Project | None = None


class Flake8Checker:
    """The flake8 plugin (entry point ``SS``): the default codes, so ``# noqa: SS105``,
    ``per-file-ignores``, ``extend-select``/``extend-ignore`` and editor integration come from flake8.
    Modules imported from the checked file are read from disk as ``sharedstate lint`` does; one
    :class:`Project` per flake8 worker process caches them."""

    name = "sharedstate"
    version = "0"
    codes: frozenset[str] | None = None  # None: every code that is on by default

    def __init__(self, tree: ast.Module, filename: str, lines: list[str]) -> None:
        self.tree = tree
        self.filename = filename
        self.source = "".join(lines)

    def run(self) -> Iterator[tuple[int, int, str, type[Flake8Checker]]]:
        global _FLAKE8_PROJECT
        if _FLAKE8_PROJECT is None:
            _FLAKE8_PROJECT = Project()
        path = Path(self.filename)
        module = _Module(path, self.tree, _collect_module(self.tree), self.source)
        handlers = _HandlerFinder(module, _FLAKE8_PROJECT).find()
        for f in _check_handlers(module, _FLAKE8_PROJECT, handlers, honour_noqa=False):
            wanted = f.code not in OFF_BY_DEFAULT if self.codes is None else f.code in self.codes
            if wanted:
                yield f.line, f.col - 1, f"{f.code} {f.message}", type(self)


class Flake8CacheChecker(Flake8Checker):
    """The flake8 plugin for SS201 (entry point ``SS2``), off by default: ``flake8
    --enable-extensions SS2`` turns it on."""

    off_by_default = True
    codes = OFF_BY_DEFAULT


try:  # the installed version, for ``flake8 --version``; lint.py stays importable on its own
    from sharedstate import __version__ as _version

    Flake8Checker.version = _version
except ImportError:  # pragma: no cover
    pass


SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages", "build", "dist"})


def iter_python_files(paths: Iterable[str]) -> Iterator[Path]:
    """Files named on the command line, and ``*.py`` under named directories (skipping hidden dirs,
    virtualenvs and build output). Raises ``FileNotFoundError`` for a missing path."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        yield Path(dirpath) / name
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(raw)


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Find module-level mutable state (lists, dicts, sets, object instances, `global` names) that "
        "request handlers mutate, and say which sharedstate object to use instead. Exit status: 0 clean, "
        "1 findings, 2 usage error or a file that cannot be parsed. Codes: "
        + "; ".join(f"{code} {text}" for code, text in CODES.items())
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Python files or directories")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--enable",
        action="append",
        default=[],
        metavar="CODE",
        help="also report a code that is off by default (SS201: per-process caches); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    findings: list[Finding] = []
    unknown = [code for code in args.enable if code.upper() not in CODES]
    if unknown:
        print(f"sharedstate lint: unknown code for --enable: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        files = list(iter_python_files(args.paths))
    except FileNotFoundError as exc:
        print(f"sharedstate lint: no such file or directory: {exc.args[0]}", file=sys.stderr)
        return 2
    if not files:
        print(
            f"sharedstate lint: no Python files found in {', '.join(args.paths)} (hidden directories, "
            f"virtualenvs and build output are skipped); nothing was checked",
            file=sys.stderr,
        )
        return 2
    project = Project()
    enabled = frozenset(code.upper() for code in args.enable)
    for path in files:
        findings.extend(lint_path(path, project, enabled))
    if args.format == "json":
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f.text())
        problems = sum(f.code != "SS900" for f in findings)
        if findings:
            print(f"{problems} finding{'s' if problems != 1 else ''} in {len(files)} files", file=sys.stderr)
    if any(f.code == "SS900" for f in findings):
        return 2
    return 1 if findings else 0
