"""`python -m autotinybert ...` (and `torchrun -m autotinybert ...`) run the CLI."""

import sys

from .cli import main

sys.exit(main())
