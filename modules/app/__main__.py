"""``python -m modules.app``: start the web app (see ``--help``)."""

import sys

from . import main

sys.exit(main())
