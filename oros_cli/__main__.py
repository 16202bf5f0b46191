"""``python -m oros_cli ARGS`` is the ``oros`` command."""

import sys

from oros_cli.main import main

sys.exit(main())
