"""`python -m bertcore.tokenizer`: the command line of bertcore/data/tokenizer.py, kept at its
documented name (`python -m bertcore.tokenizer --help`). The code lives in
bertcore.data.tokenizer."""

import sys

from bertcore.data.tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
