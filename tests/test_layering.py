"""The house's layering, in one place: imports run downward only (bertcore <- each twin <-
parity, benchmarks), no module imports a twin's train.py (the command line), no import cycle
(lazy imports included), and the framework-free packages really load no framework."""

import ast
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGES = ["bertcore", "torchbert", "jaxbert", "parity", "benchmarks"]
# What each package may import from the project (docs/design.md, "Layout").
ALLOWED = {"bertcore": set(), "torchbert": {"bertcore"}, "jaxbert": {"bertcore"},
           "parity": {"bertcore", "torchbert", "jaxbert"},
           "benchmarks": {"bertcore", "torchbert", "jaxbert", "parity"}}
FRAMEWORKS = ("torch", "jax", "flax", "optax", "orbax", "tensorflow")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts).removesuffix(".__init__")] = f
    return out


def imports(mod: str, f: Path, known: set[str]) -> set[str]:
    """Project modules `mod` imports anywhere in its file (module level or inside functions)."""
    pkg = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        names = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                base = ".".join(pkg[: len(pkg) - n.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in n.names]
        for name in names:
            # the longest known module the name starts with ("a.b.c" of "a.b.c.func")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != mod:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(m, f, known) for m, f in mods.items()}


def test_imports_run_downward_only():
    bad = [f"{m} imports {t}" for m, ts in graph().items() for t in sorted(ts)
           if t.split(".")[0] != m.split(".")[0]
           and t.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not bad, bad


def test_nothing_imports_a_twins_command_line():
    bad = [f"{m} imports {t}" for m, ts in graph().items() for t in sorted(ts)
           if t in ("torchbert.train", "jaxbert.train")]
    assert not bad, bad


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(g.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_framework_free_modules_load_no_framework():
    """Importing every bertcore module (and parity's framework-free converter) loads none of the
    frameworks: `--to hf` conversions, data preparation and the CLIs' --help never need them."""
    names = sorted(m for m in modules() if m.startswith("bertcore")
                   and not m.endswith("__main__")) + ["parity.convert", "parity.state"]
    code = (f"import importlib, sys\nfor m in {names!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
