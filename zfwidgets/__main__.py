"""``python -m zfwidgets COMMAND`` (the ``zfwidgets`` command): see :mod:`zfwidgets.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m zfwidgets"))
