"""``python -m durableflow.cli``: the same as the ``durableflow`` command."""

import sys

from durableflow.cli import main

sys.exit(main())
