"""Command-line tools (``sharedstate demo|race|lint``).

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``; :mod:`sharedstate.cli` imports
a module only when its command runs, so an optional dependency of one tool never breaks another.
"""
