"""`python -m facelib ...` (and `torchrun ... -m facelib train ...`): the same CLI as the `facelib` command."""

import sys

from facelib.cli import main

sys.exit(main())
