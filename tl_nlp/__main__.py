"""`python -m tl_nlp ...` runs the `tl-nlp` command line (also under `accelerate launch -m tl_nlp ...`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
