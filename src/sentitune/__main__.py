"""`python -m sentitune`: what launchers run (`accelerate launch -m sentitune train ...`, torchrun -m)."""

import sys

from sentitune.cli import main

sys.exit(main())
