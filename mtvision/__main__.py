"""``python -m mtvision COMMAND ...``: the same as the ``mtvision`` console command."""

import sys

from mtvision.commands import main

sys.exit(main())
