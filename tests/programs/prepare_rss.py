"""Prepare argv[1] synthetic documents with the tokenizer in argv[3] into argv[2] and print the
process's peak resident memory (KiB)."""

import resource
import sys

from bertcore.data.prepare import prepare
from bertcore.data.tokenizer import load_tokenizer
from helpers import synthetic_documents

tok = load_tokenizer(sys.argv[3])
base = synthetic_documents(500, seed=2)


def docs(n):
    for i in range(n):
        yield base[i % 500]


# workers=1: the writer's own memory (worker processes hold one chunk each; the benchmark
# measures the whole process tree at corpus scale)
prepare(docs(int(sys.argv[1])), tok, sys.argv[2], progress=False, workers=1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
