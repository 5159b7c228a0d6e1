"""Draw the same random bits before and after jaxbert.cpu.unroll_threefry_on_cpu, and print as
JSON whether the rule was registered, whether the bits are the same, and whether each compiled
program has a loop."""

import json

import jax
import jax.numpy as jnp

from jaxbert.cpu import unroll_threefry_on_cpu


def bits():
    f = jax.jit(lambda k: jax.random.bits(k, (3, 1000), jnp.uint32))   # a new program each call
    key = jax.random.fold_in(jax.random.PRNGKey(7), 3)
    return f(key).tolist(), " while(" in f.lower(key).compile().as_text()


before, loop_before = bits()
done = unroll_threefry_on_cpu()
after, loop_after = bits()
print(json.dumps({"done": done, "same": before == after, "loops": [loop_before, loop_after]}))
