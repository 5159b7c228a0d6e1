"""Open the shards in argv[1] with the tokenizer in argv[2] through a command-line entry point
(bertcore.infra.errors.cli_entry): what a user sees when the two do not belong together."""

import sys

from bertcore.data.shards import Shards
from bertcore.data.tokenizer import load_tokenizer
from bertcore.infra.errors import cli_entry

sys.exit(cli_entry(lambda: Shards(sys.argv[1], load_tokenizer(sys.argv[2])))())
