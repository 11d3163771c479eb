"""Run Django's cache tests against SharedStateCache: ``python run.py DJANGO_TESTS_DIR``.

Environment: see peer_cache.py. Prints Django's runner output; exit status 0 when all passed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.path[:0] = [sys.argv[1], str(HERE)]
    os.environ["DJANGO_SETTINGS_MODULE"] = "peer_settings"
    import django
    from django.test.runner import DiscoverRunner

    django.setup()
    failures = DiscoverRunner(verbosity=2, interactive=False).run_tests(["peer_cache", "peer_sessions"])
    sys.exit(1 if failures else 0)
