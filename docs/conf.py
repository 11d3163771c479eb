"""Sphinx configuration: the Markdown guides (MyST) and the API reference (autodoc) in one site.

Built by ``make docs`` (part of ``make test``) with warnings as errors and nitpicky cross-references,
so a broken link, a docstring that is not valid reStructuredText, or a signature naming a type the
reference does not document fails the build.
"""

from __future__ import annotations

import importlib
import os
import sys
import typing
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.domains import Domain
from sphinx.environment import BuildEnvironment

# Document the checkout, not whatever copy of sharedstate happens to be installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

import sharedstate

project = "sharedstate"
author = "sharedstate contributors"
copyright = "sharedstate contributors"
release = sharedstate.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# The async API page documents sharedstate.AsyncStore & co. It is built once those names exist;
# until then it is left out (and its toctree entry in api/index.md must be absent too).
if not hasattr(sharedstate, "AsyncStore"):
    exclude_patterns.append("api/async.md")

# -- MyST: the existing guides are plain GitHub Markdown --------------------------------------------
myst_heading_anchors = 3  # "[x](sqlite.md#memory-one-process)" links to a heading, as on GitHub
myst_enable_extensions = ["deflist"]

# -- autodoc -----------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # "timeout=_MISSING" reads better than an object repr
# Not the stdlib's "D.get(k[,d]) -> D[k] if k in D, else d." for SharedDict.get: a method
# documents its own contract, or is left out.
autodoc_inherit_docstrings = False
autodoc_docstring_signature = False
autoclass_content = "class"
autodoc_default_options = {"members": True}  # bases are shown where they matter (:show-inheritance:)
python_use_unqualified_type_names = True
add_module_names = False

nitpicky = True
# Names in signatures and docstrings that this site does not document render as plain text when
# they belong to the stdlib or a third-party library (no intersphinx: the build must work offline)
# or are type variables. ``_is_foreign`` decides by importing the name; the list below covers
# names not importable at build time (modules named in prose).
nitpick_ignore_regex = [
    ("py:(class|obj|data|mod|func|meth|exc)", r"(abc|collections\.abc|contextlib|datetime|typing)(\..*)?"),
    ("py:(class|obj|data|mod|func|meth)", r"(flask|werkzeug|itsdangerous|click)(\..*)?"),
    ("py:class", r"Request|Response"),  # Flask's, imported by sharedstate.sessions for type checking only
    # The keyspace the objects are built on is internal (users get objects from a store), and so is
    # the generated class under the sync SharedDict's MutableMapping protocol.
    ("py:class", r"sharedstate\._(a)?sync\.keyspace\.(Async)?Keyspace"),
    ("py:class", r"sharedstate\._sync\.objects\.SharedDict"),
    ("py:class", r"[PRT]"),
    # The session engine under the framework adapters is internal; Starlette's names are its own.
    ("py:class", r"sharedstate\._sessions\..*|sharedstate\._(a)?sync\.sessions\..*"),
    ("py:(class|obj|data|mod|func|meth)", r"starlette(\..*)?|ASGIApp|Scope|Receive|Send|Message"),
    ("py:class", r"TimestampSigner"),  # itsdangerous', imported by sharedstate.sessions for type checking  # the type variables of the generated cache and store modules
]


# -- re-exported names -------------------------------------------------------------------------------
# Docstrings and annotations name an object where it is defined or imported (``Store`` inside
# sharedstate.flask, ``sharedstate.store.Store``, a generated ``sharedstate._sync`` class), while
# the reference documents it once, under its public name. A reference nobody documents under the
# name it uses is resolved by importing that name and looking the object up among the documented
# ones, so moving a class between modules never breaks a link and never documents it twice.
_documented: dict[int, tuple[object, str]] = {}
_LINKABLE = {"module", "class", "exception", "function", "method", "classmethod", "staticmethod", "property"}


def _remember(app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]) -> None:
    if what in _LINKABLE:  # not data: equal values (0.01, "") may be one shared object
        _documented.setdefault(id(obj), (obj, name))


def _import_dotted(name: str) -> object | None:
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _context_modules(node: pending_xref) -> list[str]:
    """The modules a bare name in ``node`` may come from: the current one, and the one defining
    the current class (``sharedstate.Store`` is documented in ``sharedstate``, its annotations name
    ``sharedstate.store`` globals)."""
    module = node.get("py:module")
    modules = [module] if module else []
    owner = _import_dotted(f"{module}.{node['py:class']}") if module and node.get("py:class") else None
    defined_in = getattr(owner, "__module__", None)
    if defined_in and defined_in not in modules:
        modules.append(defined_in)
    return modules


def _resolve_alias(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.reference | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    candidates = [f"{module}.{target}" for module in _context_modules(node)]
    candidates += [target, f"sharedstate.{target}"]
    for candidate in candidates:
        obj = _import_dotted(candidate)
        known = _documented.get(id(obj)) if obj is not None else None
        if known is not None and known[0] is obj and known[1] != target:
            domain = env.get_domain("py")
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], known[1], node, contnode
            )
    return None


def _is_foreign(app: Sphinx, domain: Domain | None, node: pending_xref) -> bool | None:
    """True (no warning) for a type variable or an object defined outside sharedstate."""
    if domain is None or domain.name != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    for candidate in [*_context_modules(node), ""]:
        obj = _import_dotted(f"{candidate}.{target}" if candidate else target)
        if obj is None:
            continue
        if isinstance(obj, (typing.TypeVar, typing.ParamSpec, typing.ParamSpecArgs, typing.ParamSpecKwargs)):
            return True
        # A module has no __module__: its own name says where it belongs.
        defined_in = str(getattr(obj, "__module__", None) or getattr(obj, "__name__", ""))
        return defined_in.partition(".")[0] != "sharedstate"
    return None


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _remember)
    app.connect("missing-reference", _resolve_alias)
    app.connect("warn-missing-reference", _is_foreign)
