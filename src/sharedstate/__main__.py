"""``python -m sharedstate``: the same as the ``sharedstate`` command."""

import sys

from sharedstate.cli import main

sys.exit(main())
