"""``python -m eventservice.cli``: the same as ``es``."""

import sys

from . import main

sys.exit(main())
