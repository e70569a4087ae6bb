"""`python -m sentitune.cli`: the `sentitune` command, for a process started without the console script."""

import sys

from sentitune.cli import main

sys.exit(main())
