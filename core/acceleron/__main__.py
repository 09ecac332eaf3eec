"""``python -m acceleron`` is the ``acceleron`` command."""

import sys

from acceleron.cli import main

sys.exit(main())
