"""``python -m zfwidgets COMMAND``: see :mod:`zfwidgets.cli`."""

import sys

from .cli import main

sys.exit(main())
