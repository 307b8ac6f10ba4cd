"""`python -m tl_nlp.cli` (as `accelerate launch -m tl_nlp.cli` runs it)."""

import sys

from . import main

sys.exit(main())
