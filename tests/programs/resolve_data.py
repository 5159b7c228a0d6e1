"""Resolve a --corpus run's data (argv[1], a 300-entry vocabulary) through the cache, as a
training run starts, saying what it does; then print "built", the tokenizer's fingerprint and
the data directory."""

import sys
import types

from bertcore.train.run import resolve_data

a = types.SimpleNamespace(data=None, tokenizer=None, corpus=sys.argv[1], vocab_size=300)
tok, shards = resolve_data(a, progress=False, log=lambda m: print(m, flush=True))
print("built", tok.fingerprint, shards.path, flush=True)
