"""Resolve a --corpus run's data (argv[1], a 300-entry vocabulary) through the cache, as a
training run starts, saying what it does; then print "built", the tokenizer's fingerprint and
the data directory."""

import sys
import types

from bertcore.infra.errors import setup_logging
from bertcore.data.cache import resolve_data

a = types.SimpleNamespace(data=None, tokenizer=None, corpus=sys.argv[1], vocab_size=300)
setup_logging()   # a program of its own: its entry point shows the messages
tok, shards = resolve_data(a, progress=False)
print("built", tok.fingerprint, shards.path, flush=True)
