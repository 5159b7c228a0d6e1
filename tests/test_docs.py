"""Every code block in docs/ is checked, so a page cannot rot (convention: docs/tour/README.md).

- ```python            run: a page's python blocks run in order, in one namespace, in a fresh
                        subprocess whose cwd is a temp dir; a ```text output block right after
                        one (blank lines between allowed) is what that block must print.
- ```python excerpt=F  not run: each code line (its trailing `# comment` dropped, blanks
                        collapsed) must still occur in one of the comma-separated files F.
- ```bash / ```        not run (those are the long runs); every `python -m MOD` of this
                        project they name must exist and answer `--help` (README.md too).
- docs/tour/make_figures.py runs (into a temp dir) and writes every PNG the pages show.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import program

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```(\S*)(.*)$")
PROJECT = ("bertcore", "torchbert", "jaxbert", "parity", "benchmarks")


def blocks(path: Path) -> list[dict]:
    """Fenced blocks of a page: lang, options, text, first line number."""
    out, cur = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if cur is None:
            m = FENCE.match(line)
            if m:
                opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in m.group(2).split())
                cur = {"lang": m.group(1), "opts": opts, "lines": [], "line": n + 1,
                       "prev_end": out[-1]["end"] if out else 0, "start": n}
        elif line.startswith("```"):
            cur["text"], cur["end"] = "\n".join(cur.pop("lines")), n
            out.append(cur)
            cur = None
        else:
            cur["lines"].append(line)
    assert cur is None, f"{path}: unclosed code fence at line {cur['line'] - 1}"
    return out


def runnable(path: Path) -> list[dict]:
    """The page's runnable python blocks, each with the output block that follows it (or None)."""
    bs = blocks(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, b in enumerate(bs):
        if b["lang"] != "python" or "excerpt" in b["opts"]:
            continue
        expect = None
        if i + 1 < len(bs) and bs[i + 1]["lang"] == "text" and "output" in bs[i + 1]["opts"]:
            between = lines[b["end"]:bs[i + 1]["start"] - 1]
            if all(not s.strip() for s in between):
                expect = bs[i + 1]["text"]
        out.append({"code": b["text"], "line": b["line"], "expect": expect})
    return out


def _norm(text: str) -> str:
    return "\n".join(s.rstrip() for s in text.strip("\n").splitlines())


def _code_lines(text: str) -> list[str]:
    out = []
    for s in text.splitlines():
        s = re.sub(r"\s+#\s.*$", "", s).strip()
        if s and not s.startswith("#") and s != "...":
            out.append(" ".join(s.split()))
    return out


def _env(tmp: Path) -> dict:
    """The pages' environment: the repository and docs/tour (for `import tour`) importable, a
    private cache, no plots on screen."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(DOCS / "tour")]),
            "TWINBERT_CACHE": str(tmp / "cache"), "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}


# ---- runnable blocks ---------------------------------------------------------------------------

RUN_PAGES = [p for p in PAGES if runnable(p)]


def _page_param(page: Path):
    """Pages that run the command lines (tour.run) or compile a JAX train step are `slow`."""
    text = page.read_text(encoding="utf-8")
    slow = "tour.run(" in text or "jax.jit(" in text
    return pytest.param(page, id=str(page.relative_to(ROOT)),
                        marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", [_page_param(p) for p in RUN_PAGES])
def test_page_runs_and_prints_what_it_shows(page: Path, tmp_path: Path):
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps(runnable(page)))
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(spec), str(page)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    got = json.loads((tmp_path / "blocks.json.out").read_text())
    for block, printed in zip(runnable(page), got):
        if block["expect"] is not None:
            assert _norm(printed) == _norm(block["expect"]), (
                f"{page.relative_to(ROOT)}:{block['line']}: the block printed\n{printed}\n"
                f"but the page shows\n{block['expect']}")


def _run_blocks(spec: str, page: str) -> None:
    """Subprocess side: run the blocks in one namespace, recording each block's stdout."""
    import contextlib
    import io

    todo = json.loads(Path(spec).read_text())
    ns: dict = {"__name__": "__docs__"}
    printed = []
    for b in todo:
        buf = io.StringIO()
        code = compile("\n" * (b["line"] - 1) + b["code"], page, "exec")
        with contextlib.redirect_stdout(buf):
            exec(code, ns)
        printed.append(buf.getvalue())
        Path(spec + ".out").write_text(json.dumps(printed))


# ---- excerpts ----------------------------------------------------------------------------------

EXCERPTS = [(p, b) for p in PAGES for b in blocks(p) if "excerpt" in b["opts"]]


def excerpt_missing(block: dict) -> list[str]:
    """The excerpt's code lines that none of its files contains any more."""
    sources = []
    for f in (ROOT / f for f in block["opts"]["excerpt"].split(",")):
        assert f.is_file(), f"excerpt names a missing file {f}"
        sources.append(" ".join(" ".join(_code_lines(f.read_text(encoding="utf-8"))).split()))
    code = " ".join(sources)
    return [s for s in _code_lines(block["text"]) if s not in code]


@pytest.mark.parametrize("page,block", EXCERPTS,
                         ids=[f"{p.relative_to(ROOT)}:{b['line']}" for p, b in EXCERPTS])
def test_excerpt_still_in_the_code(page: Path, block: dict):
    missing = excerpt_missing(block)
    assert not missing, (f"{page.relative_to(ROOT)}:{block['line']}: lines no longer in "
                         f"{block['opts']['excerpt']}: {missing}")


def test_the_checks_have_teeth(tmp_path: Path):
    """The parser pairs outputs with their blocks, and an edited excerpt is caught."""
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nprint(1)\n```\n\n```text output\n1\n```\n\n"
                    "```python\nx = 2\n```\n\nprose\n\n```text output\n2\n```\n\n"
                    "```python excerpt=torchbert/model.py\n"
                    "mask = attention_mask.bool()[:, None, None, :]"
                    "  # a comment\n...\nmask = attention_mask.float()\n```\n")
    run = runnable(page)
    assert [r["expect"] for r in run] == ["1", None]     # prose between: not its output
    (excerpt,) = [b for b in blocks(page) if "excerpt" in b["opts"]]
    assert excerpt_missing(excerpt) == ["mask = attention_mask.float()"]
    assert _norm("a  \nb\n\n") == _norm("a\nb")


def test_every_python_block_is_run_or_an_excerpt():
    for p in PAGES:
        for b in blocks(p):
            if b["lang"] == "python" and "excerpt" not in b["opts"]:
                assert any(r["line"] == b["line"] for r in runnable(p))
            if b["lang"] == "text" and "output" in b["opts"]:
                # an output block must belong to the python block right before it
                assert any(r["expect"] == b["text"] for r in runnable(p)), (
                    f"{p.relative_to(ROOT)}:{b['line']}: output block after no python block")


# ---- commands ----------------------------------------------------------------------------------

def _modules() -> list[str]:
    mods = set()
    for p in [*PAGES, ROOT / "README.md"]:
        for b in blocks(p):
            if b["lang"] in ("", "bash", "sh", "console"):
                for m in re.finditer(r"(?:python|torchrun)\b[^\n|]*?\s-m\s+([\w.]+)", b["text"]):
                    if m.group(1).split(".")[0] in PROJECT:
                        mods.add(m.group(1))
    return sorted(mods)


MODULES = _modules()


def test_commands_are_found():
    assert {"torchbert.train", "jaxbert.train", "parity.check"} <= set(MODULES)


@pytest.mark.slow
def test_command_modules_answer_help():
    """One process imports every module the commands name and asks its CLI for --help (as
    `python -m MOD --help` would, without paying a fresh interpreter per module)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(program("answer_help", *MODULES), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {}


# ---- figures -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_figures_script_writes_every_png_the_tour_shows(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg",
           "TWINBERT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(DOCS / "tour" / "make_figures.py"), "--out",
                           str(tmp_path / "img")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = {p.name for p in (tmp_path / "img").glob("*.png")}
    shown = set()
    for page in (DOCS / "tour").glob("*.md"):
        shown |= set(re.findall(r"\]\(img/([\w.-]+\.png)\)", page.read_text(encoding="utf-8")))
    assert shown and shown <= written, shown - written
    for name in shown:
        assert (DOCS / "tour" / "img" / name).is_file(), f"committed image missing: {name}"


def _update(page: Path) -> None:
    """`python tests/test_docs.py --update PAGE.md`: run the page as the test does and write what
    each block printed into its output block (review the diff before committing it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "blocks.json"
        todo = runnable(page)
        spec.write_text(json.dumps(todo))
        env = _env(Path(tmp))
        (Path(tmp) / "work").mkdir()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), str(spec), str(page)],
                       cwd=Path(tmp) / "work", env=env, check=True)
        printed = json.loads(Path(str(spec) + ".out").read_text())
    lines = page.read_text(encoding="utf-8").splitlines()
    outs = {b["start"]: b for b in blocks(page) if b["lang"] == "text" and "output" in b["opts"]}
    starts = {}
    for b, got in zip(todo, printed):
        if b["expect"] is not None:
            o = next(o for o in outs.values() if o["text"] == b["expect"] and o["start"] > b["line"]
                     and o["start"] not in starts)
            starts[o["start"]] = (o["end"], _norm(got).splitlines())
    for start in sorted(starts, reverse=True):
        end, new = starts[start]
        lines[start:end - 1] = new
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1] == "--update":
        for name in sys.argv[2:]:
            _update(Path(name).resolve())
    else:
        _run_blocks(sys.argv[1], sys.argv[2])
