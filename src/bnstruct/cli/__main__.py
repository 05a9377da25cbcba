"""``python -m bnstruct.cli``."""

import sys

from . import main

sys.exit(main())
