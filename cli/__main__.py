"""`python -m cli ...`, the same as the `transferlab` command."""

import sys

from cli.main import main

sys.exit(main())
