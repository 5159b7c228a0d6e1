"""`python -m bertcore.corpus`: the command line of bertcore/data/corpus.py, kept at its documented
name (`python -m bertcore.corpus --help`). The code lives in bertcore.data.corpus."""

import sys

from bertcore.data.corpus import main

if __name__ == "__main__":
    sys.exit(main())
