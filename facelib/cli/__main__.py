"""`python -m facelib.cli`: the command line."""

import sys

from facelib.cli import main

sys.exit(main())
