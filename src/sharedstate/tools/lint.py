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
  framework objects, sharedstate objects). Constants (numbers, strings, tuples, frozensets) are not
  shared names, but ``global x; x = ...`` rebinding of *any* module-level name is reported.
* *handlers*: functions decorated with ``@app.route``, ``@bp.get``/``post``/..., ``@app.before_request``
  and the other per-request hooks, registered with ``add_url_rule(view_func=...)``, or methods of
  class-based views; plus every module-level function they call in the same module, transitively.
* *mutations* inside handlers: codes SS101-SS106 (see :data:`CODES` and docs/tools.md).

Locals and parameters that shadow a module-level name are not shared; nor are ``g``, ``request``,
``session`` and ``current_app`` (context-locals). A ``# noqa`` or ``# noqa: SS1xx`` comment on the line
silences a finding.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

CODES: dict[str, str] = {
    "SS101": "module-level name rebound in a handler via `global`",
    "SS102": "augmented assignment (+=, -=, ...) to an item or attribute of a module-level object",
    "SS103": "item assignment or deletion on a module-level object",
    "SS104": "attribute assignment or deletion on a module-level object",
    "SS105": "mutating method call on a module-level object (append, update, pop, ...)",
    "SS106": "call of a method that mutates `self` on a module-level instance",
    "SS900": "file cannot be read or parsed",
}

# Decorator attribute names that make a function run per request.
ROUTE_DECORATORS = frozenset(
    {
        "route", "get", "post", "put", "patch", "delete", "head", "options", "websocket", "api_route",
        "before_request", "after_request", "teardown_request", "before_app_request", "after_app_request",
        "teardown_app_request", "teardown_appcontext", "before_first_request", "context_processor",
        "app_context_processor", "errorhandler", "app_errorhandler", "exception_handler",
        "url_value_preprocessor", "app_url_value_preprocessor", "url_defaults", "app_url_defaults",
        "template_filter", "app_template_filter", "template_global", "app_template_global",
        "template_test", "app_template_test", "middleware",
    }
)  # fmt: skip
# Bare-name decorators (bottle-style ``@get("/")``) count only when called with arguments.
BARE_ROUTE_DECORATORS = frozenset({"route", "get", "post", "put", "patch", "delete"})
# Class-based views: these bases make the HTTP-verb methods handlers.
VIEW_BASES = frozenset({"View", "MethodView", "Resource", "HTTPEndpoint", "HTTPMethodView"})
VIEW_METHODS = frozenset({"get", "post", "put", "patch", "delete", "head", "options", "dispatch_request"})

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


@dataclass
class ModuleInfo:
    shared: dict[str, Shared] = field(default_factory=dict)
    module_names: set[str] = field(default_factory=set)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, FuncNode] = field(default_factory=dict)
    # class name -> method name -> why it mutates self ("self.param += 1 at line 7")
    mutators: dict[str, dict[str, str]] = field(default_factory=dict)
    # class name -> every method name it defines (own and module-level bases)
    methods: dict[str, dict[str, FuncNode]] = field(default_factory=dict)


# --- helpers -------------------------------------------------------------------------------------


def _final_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


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
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            from_sharedstate = isinstance(stmt, ast.ImportFrom) and (stmt.module or "").split(".")[0] == (
                "sharedstate"
            )
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                info.module_names.add(bound)
                if from_sharedstate or alias.name.split(".")[0] == "sharedstate":
                    safe_roots.add(bound)
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
            if kind == "safe":
                safe_roots.add(target.id)
                info.shared.pop(target.id, None)
            elif kind is not None and target.id not in CONTEXT_LOCALS:
                # A later immutable rebinding does not undo an earlier mutable one (either may be live).
                info.shared[target.id] = Shared(target.id, kind, target.lineno, cls)
    for name in info.classes:
        info.shared.setdefault(name, Shared(name, "class", info.classes[name].lineno))
    _analyze_classes(info)
    return info


def _analyze_classes(info: ModuleInfo) -> None:
    """Find, per class, the methods that mutate ``self`` (directly or via ``self.other()``)."""

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
    for cls, methods in info.methods.items():
        direct: dict[str, str] = {}
        calls: dict[str, set[str]] = {}
        for name, fn in methods.items():
            if any(_final_name(d) == "staticmethod" for d in fn.decorator_list):
                continue
            params = fn.args.posonlyargs + fn.args.args
            if not params:
                continue
            reason, called = _self_mutation(fn, params[0].arg, methods)
            if reason is not None:
                direct[name] = reason
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


def _self_mutation(fn: FuncNode, self_name: str, methods: dict[str, FuncNode]) -> tuple[str | None, set[str]]:
    """(first direct mutation of self in ``fn`` as text, or None; names of self.methods it calls)."""
    reason: str | None = None
    called: set[str] = set()

    def on_self(target: ast.expr) -> bool:
        root = _root(target)
        return root is not None and root.id == self_name and root is not target

    for node in ast.walk(fn):
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
        if found is not None and reason is None:
            line = getattr(found, "lineno", fn.lineno)
            text = _short(found.targets[0] if isinstance(found, ast.Delete) else found, 50)
            if isinstance(found, ast.Delete):
                text = f"del {text}"
            reason = f"mutates self ({text} at line {line})"
    return reason, called


# --- handlers ------------------------------------------------------------------------------------


def _is_route_decorator(dec: ast.expr) -> bool:
    call = dec if isinstance(dec, ast.Call) else None
    target = call.func if call is not None else dec
    if isinstance(target, ast.Attribute):
        return target.attr in ROUTE_DECORATORS
    if isinstance(target, ast.Name) and call is not None:
        return target.id in BARE_ROUTE_DECORATORS
    return False


def _find_handlers(tree: ast.Module, info: ModuleInfo) -> list[tuple[FuncNode, ast.ClassDef | None]]:
    """Handlers as (function, its class-based view or None), in source order."""
    found: dict[int, tuple[FuncNode, ast.ClassDef | None]] = {}
    registered: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if any(_is_route_decorator(d) for d in node.decorator_list):
                found.setdefault(id(node), (node, None))
        elif isinstance(node, ast.ClassDef):
            bases = {_final_name(b) for b in node.bases}
            if bases & VIEW_BASES:
                for stmt in node.body:
                    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in VIEW_METHODS:
                        found.setdefault(id(stmt), (stmt, node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("add_url_rule", "add_api_route", "add_route")
        ):
            candidates = [kw.value for kw in node.keywords if kw.arg in ("view_func", "endpoint")]
            candidates += node.args[1:3]
            for cand in candidates:
                if isinstance(cand, ast.Name):
                    registered.add(cand.id)
    for name in registered:
        fn = info.functions.get(name)
        if fn is not None:
            found.setdefault(id(fn), (fn, None))
    return sorted(found.values(), key=lambda item: (item[0].lineno, item[0].col_offset))


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
        stack.extend(ast.iter_child_nodes(node))
    return local - declared_global, declared_global


@dataclass
class _Scope:
    shadowed: set[str]
    declared_global: set[str]


class _FunctionChecker:
    """Walks one handler (or function reached from one) and records mutations of shared names."""

    def __init__(self, info: ModuleInfo, path: str, context: str, view: ast.ClassDef | None) -> None:
        self.info = info
        self.path = path
        self.context = context
        self.view = view
        self.findings: list[Finding] = []
        self.callees: list[tuple[FuncNode, ast.ClassDef | None]] = []

    def check(self, fn: FuncNode) -> None:
        local, declared = _scope_names(fn)
        self._visit_body(fn.body, _Scope(local, declared))

    # scope handling

    def _shared(self, name: str, scope: _Scope) -> Shared | None:
        if name in CONTEXT_LOCALS or (name in scope.shadowed and name not in scope.declared_global):
            return None
        return self.info.shared.get(name)

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
            self._visit_body(ast.iter_child_nodes(node), inner)
            return
        self._inspect(node, scope)
        self._visit_body(ast.iter_child_nodes(node), scope)

    # the checks

    def _add(self, node: ast.AST, code: str, message: str) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        self.findings.append(Finding(self.path, line, col, code, f"{message} [{self.context}]"))

    def _inspect(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._store(target, scope, node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._store(node.target, scope, node)
        elif isinstance(node, ast.AugAssign):
            self._augassign(node, scope)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            self._store(node.target, scope, node)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._store(node.optional_vars, scope, node)
        elif isinstance(node, ast.NamedExpr):
            self._store(node.target, scope, node)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self._delete(target, scope)
        elif isinstance(node, ast.Call):
            self._call(node, scope)

    def _store(self, target: ast.expr, scope: _Scope, stmt: ast.AST) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._store(elt, scope, stmt)
        elif isinstance(target, ast.Starred):
            self._store(target.value, scope, stmt)
        elif isinstance(target, ast.Name):
            if target.id in scope.declared_global:
                self._add(
                    target,
                    "SS101",
                    f"handler rebinds global {target.id!r}: each process (and each reload) has its own "
                    f"copy; use store.set({target.id!r}, ...) / store.update({target.id!r}, fn)",
                )
        elif isinstance(target, ast.Subscript | ast.Attribute):
            root = _root(target)
            shared = self._shared(root.id, scope) if root is not None else None
            if shared is None:
                return
            if isinstance(target, ast.Subscript):
                self._add(
                    target,
                    "SS103",
                    f"item assignment {_short(target)} = ... on module-level {shared.kind} {shared.name!r}; "
                    f"{_item_advice(shared, target)}",
                )
            else:
                self._add(
                    target,
                    "SS104",
                    f"attribute assignment {_short(target)} = ... on module-level {shared.kind} "
                    f"{shared.name!r}; use `with store.edit({shared.name!r}) as obj:`",
                )

    def _delete(self, target: ast.expr, scope: _Scope) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._delete(elt, scope)
            return
        if isinstance(target, ast.Name):
            if target.id in scope.declared_global:
                self._add(target, "SS101", f"handler deletes global {target.id!r}; use store.delete(...)")
            return
        root = _root(target)
        shared = self._shared(root.id, scope) if root is not None else None
        if shared is None:
            return
        code = "SS103" if isinstance(target, ast.Subscript) else "SS104"
        advice = (
            f"use store.dict({shared.name!r}).pop(key, None)"
            if code == "SS103"
            else f"use `with store.edit({shared.name!r}) as obj:`"
        )
        self._add(
            target, code, f"del {_short(target)} on module-level {shared.kind} {shared.name!r}; {advice}"
        )

    def _augassign(self, node: ast.AugAssign, scope: _Scope) -> None:
        target = node.target
        numeric = isinstance(node.op, ast.Add | ast.Sub)
        if isinstance(target, ast.Name):
            if target.id in scope.declared_global:
                advice = (
                    f"use store.counter({target.id!r}).incr()"
                    if numeric
                    else f"use store.update({target.id!r}, fn)"
                )
                self._add(
                    target,
                    "SS101",
                    f"`{_short(node)}` on global {target.id!r} is a read-modify-write race (lost updates, "
                    f"duplicate values) and per-process; {advice}",
                )
            return
        root = _root(target)
        shared = self._shared(root.id, scope) if root is not None else None
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
            f"`{_short(node)}` on module-level {shared.kind} {shared.name!r} is a read-modify-write race; "
            f"{advice}",
        )

    def _call(self, node: ast.Call, scope: _Scope) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in self.info.functions and func.id not in scope.shadowed:
                self.callees.append((self.info.functions[func.id], None))
            return
        if not isinstance(func, ast.Attribute):
            return
        owner, method = func.value, func.attr
        if (
            self.view is not None
            and isinstance(owner, ast.Name)
            and owner.id == "self"
            and method in self.info.methods.get(self.view.name, {})
        ):
            self.callees.append((self.info.methods[self.view.name][method], self.view))
            return
        root = _root(owner)
        shared = self._shared(root.id, scope) if root is not None else None
        if shared is None:
            return
        if isinstance(owner, ast.Name) and shared.class_name is not None:
            methods = self.info.methods.get(shared.class_name, {})
            if method in methods:
                why = self.info.mutators.get(shared.class_name, {}).get(method)
                if why is not None:
                    self._add(
                        node,
                        "SS106",
                        f"{shared.name}.{method}() on module-level {shared.class_name} instance: "
                        f"{shared.class_name}.{method}() {why}; keep the state in the store: "
                        f"`with store.edit({shared.name!r}) as obj:` or store.counter(...)",
                    )
                else:  # it may still mutate module-level state: follow it like a helper function
                    self.callees.append((methods[method], None))
                return
        if method in MUTATING_METHODS:
            self._add(
                node,
                "SS105",
                f"{_short(func)}() mutates module-level {shared.kind} {shared.name!r}; "
                f"{_method_advice(shared, method)}",
            )


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


def lint_source(source: str, path: str = "<string>") -> list[Finding]:
    """Lint one module's source. A syntax error is returned as an SS900 finding."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Finding(path, exc.lineno or 1, exc.offset or 1, "SS900", f"syntax error: {exc.msg}")]
    info = _collect_module(tree)
    findings: set[Finding] = set()
    visited: set[int] = set()
    for handler, view in _find_handlers(tree, info):
        queue: list[tuple[FuncNode, ast.ClassDef | None, str]] = [
            (handler, view, f"in handler {handler.name!r}")
        ]
        while queue:
            fn, fn_view, context = queue.pop(0)
            if id(fn) in visited:
                continue
            visited.add(id(fn))
            checker = _FunctionChecker(info, path, context, fn_view)
            checker.check(fn)
            findings.update(checker.findings)
            for callee, callee_view in checker.callees:
                queue.append(
                    (callee, callee_view, f"in {callee.name!r}, called from handler {handler.name!r}")
                )
    noqa = _noqa_lines(source)
    kept = []
    for f in findings:
        silenced = noqa.get(f.line, set())
        if silenced is None or f.code in silenced:
            continue
        kept.append(f)
    return sorted(kept)


def lint_path(path: Path) -> list[Finding]:
    """Lint one file; an unreadable or undecodable file is an SS900 finding."""
    shown = str(path)
    try:
        with tokenize.open(path) as fh:  # honours PEP 263 encoding declarations
            source = fh.read()
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return [Finding(shown, 1, 1, "SS900", f"cannot read file: {exc}")]
    return lint_source(source, shown)


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


def run(args: argparse.Namespace) -> int:
    findings: list[Finding] = []
    try:
        files = list(iter_python_files(args.paths))
    except FileNotFoundError as exc:
        print(f"sharedstate lint: no such file or directory: {exc.args[0]}", file=sys.stderr)
        return 2
    for path in files:
        findings.extend(lint_path(path))
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
