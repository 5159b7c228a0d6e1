"""Call jaxbert.cpu.use_eigen_for_cpu_dots, compile a 256x256 matmul, and print as JSON whether
the flag was added, whether the dot compiled into a YNNPACK fusion, and XLA_FLAGS after."""

import json
import os

import jax
import jax.numpy as jnp

from jaxbert.cpu import use_eigen_for_cpu_dots

added = use_eigen_for_cpu_dots()
x = jnp.ones((256, 256))
hlo = jax.jit(lambda a, b: a @ b).lower(x, x).compile().as_text()
print(json.dumps({"added": added, "ynn_dot": "__ynn_fusion" in hlo,
                  "flags": os.environ.get("XLA_FLAGS", "")}))
