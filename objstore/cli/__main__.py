"""``python -m objstore.cli``: the ``objstore`` command."""

import sys

from objstore.cli import main

sys.exit(main())
