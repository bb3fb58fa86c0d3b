"""`python -m matris.datasets.synth synth --out FILE ...` (same as `matris-data synth`)."""

import sys

from .cli import main

sys.exit(main())
