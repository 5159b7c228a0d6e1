"""Lose nothing, the data commands and convert (issue 34): --overwrite never deletes a user's
files (one check and one swap for every command, bertcore.infra.files), a failed write leaves the
old output as it was, and plain mistakes are one line, never a traceback: unreadable corpus files
and folders, absurd flags, a full disk, corrupted offsets, a corpus without sentence ends, a
pickle that would run code. Each command is called in-process through its cli_entry `main`."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import build_shards, hf_dir, synthetic_documents
from bertcore.infra.errors import UserError
from bertcore.infra.files import Output, check_output, replace_output


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, no traceback, one `error:` line holding every needle; returns it."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def tokenizer_main(*args: str) -> int:
    from bertcore.data.tokenizer import main
    return main(["train", *args])


def data_main(*args: str) -> int:
    from bertcore.data.__main__ import main
    return main(list(args))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A corpus, a tokenizer trained on it and its prepared data."""
    d = tmp_path_factory.mktemp("made")
    (d / "corpus.txt").write_text("\n\n".join(synthetic_documents(120)), encoding="utf-8")
    assert tokenizer_main("--corpus", str(d / "corpus.txt"), "--vocab-size", "150",
                          "--out", str(d / "tok")) == 0
    assert data_main("prepare", "--corpus", str(d / "corpus.txt"), "--tokenizer", str(d / "tok"),
                     "--out", str(d / "data"), "--workers", "1", "--no-progress") == 0
    return d


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def no_temps(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".")]


# ---- one overwrite mechanism --------------------------------------------------------------------

def test_check_and_replace_output(tmp_path, monkeypatch):
    out = Output("a thing", frozenset({"a.txt", "sub"}), (r"part-\d+\.bin",))
    d = tmp_path / "d"
    check_output(d, out, overwrite=False)                     # missing: fine
    d.mkdir()
    check_output(d, out, overwrite=False)                     # empty: fine
    (d / "a.txt").write_text("old")
    (d / "part-7.bin").write_text("old")
    (d / ".a.txt.tmp-1-x").write_text("")                     # a killed writer's leftover
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        check_output(d, out, overwrite=False)
    check_output(d, out, overwrite=True)
    for name in ("z.txt", "y.txt", "x.txt", "w.txt"):
        (d / name).write_text("mine")
    with pytest.raises(UserError) as e:
        check_output(d, out, overwrite=True)
    assert ("not a thing's (w.txt, x.txt, y.txt, ...); --overwrite replaces only a thing, so "
            "choose another --out (or move those files away)") in str(e.value)
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "f", out, overwrite=True)

    # the swap: a failure while building leaves the old output untouched
    e2 = tmp_path / "e"
    e2.mkdir()
    (e2 / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replace_output(e2, out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("boom")
    assert (e2 / "a.txt").read_text() == "old"
    no_temps(tmp_path)
    # a file the user puts there while the new one is built refuses the swap, and is kept
    with pytest.raises(UserError, match="notes.txt"):
        with replace_output(e2, out) as tmp:
            (tmp / "a.txt").write_text("new")
            (e2 / "notes.txt").write_text("mine")
    assert (e2 / "a.txt").read_text() == "old" and (e2 / "notes.txt").read_text() == "mine"
    no_temps(tmp_path)
    (e2 / "notes.txt").unlink()
    # a swap that fails half-way (the new one cannot be renamed in) puts the old one back
    real_rename = Path.rename

    def failing(self, target):
        if self.name.startswith(".e.tmp-"):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError):
        with replace_output(e2, out) as tmp:
            (tmp / "a.txt").write_text("new")
    monkeypatch.undo()
    assert (e2 / "a.txt").read_text() == "old"
    no_temps(tmp_path)
    with replace_output(e2, out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (e2 / "a.txt").read_text() == "new"
    no_temps(tmp_path)


def test_rundir_refuses_user_files_through_the_shared_check(tmp_path):
    from bertcore.train.rundir import RUN_OUTPUT, RunDir

    d = tmp_path / "run"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as e:
        RunDir(d).check_target(overwrite=True)
    with pytest.raises(UserError) as shared:
        check_output(d, RUN_OUTPUT)
    assert str(e.value) == str(shared.value) == (
        f"{d} already holds files that are not a run's (notes.txt); --overwrite replaces only "
        f"a run, so choose another --out (or move those files away)")
    assert RunDir(d).foreign() == ["notes.txt"]


def test_overwrite_keeps_user_files_prepare_and_tokenizer(made, tmp_path, capsys):
    corpus, tok = str(made / "corpus.txt"), str(made / "tok")
    for name, run in (
            ("data", lambda out: data_main("prepare", "--corpus", corpus, "--tokenizer", tok,
                                           "--out", out, "--workers", "1", "--no-progress",
                                           "--overwrite")),
            ("tok", lambda out: tokenizer_main("--corpus", corpus, "--vocab-size", "150",
                                               "--out", out, "--overwrite"))):
        d = tmp_path / name
        assert run(str(d)) == 0
        (d / "notes.txt").write_text("precious")
        before = snapshot(d)
        capsys.readouterr()
        one_line_error(run(str(d)), capsys.readouterr().err, "notes.txt", "move those files")
        assert snapshot(d) == before
        (d / "notes.txt").unlink()
        assert run(str(d)) == 0                  # its own output alone: replaced
        no_temps(tmp_path)


def test_overwrite_keeps_user_files_convert(tmp_path, capsys):
    from parity.convert import main

    src = hf_dir(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    for to in ("hf", "jax"):      # from a Hugging Face directory both write one
        capsys.readouterr()
        one_line_error(main([str(src), str(dst), "--to", to, "--overwrite"]),
                       capsys.readouterr().err, "keep.txt", "move those files")
        assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    (dst / "keep.txt").unlink()
    assert main([str(src), str(dst), "--to", "hf", "--overwrite"]) == 0
    assert (dst / "model.safetensors").is_file()
    assert main([str(src), str(dst), "--to", "hf", "--overwrite"]) == 0   # its own: replaced
    no_temps(tmp_path)


# ---- unreadable corpus files and folders --------------------------------------------------------

def test_unreadable_corpus_is_one_line(made, tmp_path, monkeypatch, capsys):
    """Root reads anything, so permissions are simulated where the readers open and list; a
    folder where a file is expected is real."""
    import bertcore.data.readers as readers

    bad = tmp_path / "bad.txt"
    bad.write_text("Some text here. And more.\n")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Some text here. And more.\n")
    (folder / "sub" / "b.txt").write_text("Some text here. And more.\n")
    real_open, real_scandir = open, os.scandir

    def no_open(path, *a, **k):
        if Path(path) == bad:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    def no_scandir(path="."):
        if Path(path) == folder / "sub":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(readers, "open", no_open, raising=False)
    monkeypatch.setattr(os, "scandir", no_scandir)
    tok = str(made / "tok")
    for corpus, needle in ((bad, str(bad)), (folder, str(folder / "sub"))):
        for run in (lambda: tokenizer_main("--corpus", str(corpus), "--vocab-size", "150",
                                           "--out", str(tmp_path / "t")),
                    lambda: data_main("prepare", "--corpus", str(corpus), "--tokenizer", tok,
                                      "--out", str(tmp_path / "p"), "--workers", "1",
                                      "--no-progress")):
            capsys.readouterr()
            one_line_error(run(), capsys.readouterr().err, needle, "Permission denied",
                           "readable")
            assert not (tmp_path / "t").exists() and not (tmp_path / "p").exists()
    monkeypatch.undo()
    # a folder named like a corpus file inside an aclImdb tree
    root = tmp_path / "aclImdb"
    (root / "train" / "pos" / "0_9.txt").mkdir(parents=True)
    (root / "train" / "neg").mkdir()
    (root / "test" / "pos").mkdir(parents=True)
    (root / "test" / "neg").mkdir()
    capsys.readouterr()
    one_line_error(tokenizer_main("--corpus", str(root), "--out", str(tmp_path / "t")),
                   capsys.readouterr().err, "0_9.txt is a folder")


# ---- flags --------------------------------------------------------------------------------------

def test_tokenizer_min_frequency(made, tmp_path, capsys):
    corpus = str(made / "corpus.txt")
    capsys.readouterr()
    one_line_error(tokenizer_main("--corpus", corpus, "--min-frequency", "-1",
                                  "--out", str(tmp_path / "t")),
                   capsys.readouterr().err, "--min-frequency -1", "at least 0")
    assert not (tmp_path / "t").exists()
    # a min-frequency that leaves a few dozen entries of the 8192 asked for is said clearly
    assert tokenizer_main("--corpus", corpus, "--vocab-size", "8192", "--min-frequency",
                          "100000", "--out", str(tmp_path / "t")) == 0
    err = capsys.readouterr().err
    got = len((tmp_path / "t" / "vocab.txt").read_text().split())
    assert got < 100
    assert f"only {got} of the 8192 entries" in err and "--min-frequency" in err


@pytest.mark.parametrize("seq_len", ["0", "100000", "-5", "7"])
def test_prepare_seq_len_range(made, tmp_path, capsys, seq_len):
    capsys.readouterr()
    line = one_line_error(data_main("prepare", "--corpus", str(made / "corpus.txt"),
                                    "--tokenizer", str(made / "tok"), "--out",
                                    str(tmp_path / "p"), "--seq-len", seq_len, "--no-progress"),
                          capsys.readouterr().err, f"--seq-len {seq_len}", "[8, 8192]")
    assert "--max-predictions" not in line
    assert not (tmp_path / "p").exists()


# ---- a full disk --------------------------------------------------------------------------------

def test_full_disk_keeps_the_old_output(made, tmp_path, monkeypatch, capsys):
    from bertcore.data import prepare as prepare_mod
    from bertcore.data.tokenizer import WordPiece

    corpus, tok = str(made / "corpus.txt"), str(made / "tok")
    data, tdir = tmp_path / "data", tmp_path / "tok"
    assert data_main("prepare", "--corpus", corpus, "--tokenizer", tok, "--out", str(data),
                     "--workers", "1", "--no-progress") == 0
    assert tokenizer_main("--corpus", corpus, "--vocab-size", "150", "--out", str(tdir)) == 0
    old_data, old_tok = snapshot(data), snapshot(tdir)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare_mod._Writer, "close", full)
    monkeypatch.setattr(WordPiece, "write_files", full)
    for run, out in ((lambda: data_main("prepare", "--corpus", corpus, "--tokenizer", tok,
                                        "--out", str(data), "--workers", "1", "--no-progress",
                                        "--overwrite"), data),
                     (lambda: tokenizer_main("--corpus", corpus, "--vocab-size", "150",
                                             "--out", str(tdir), "--overwrite"), tdir)):
        capsys.readouterr()
        one_line_error(run(), capsys.readouterr().err, "could not write", str(out),
                       "No space left on device", "free)", "is kept as it was")
    assert snapshot(data) == old_data and snapshot(tdir) == old_tok
    no_temps(tmp_path)
    # a new output on a full disk leaves nothing behind
    capsys.readouterr()
    one_line_error(data_main("prepare", "--corpus", corpus, "--tokenizer", tok, "--out",
                             str(tmp_path / "new"), "--workers", "1", "--no-progress"),
                   capsys.readouterr().err, "No space left on device", "nothing was left")
    assert not (tmp_path / "new").exists()
    no_temps(tmp_path)


# ---- data that is wrong
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sent_offsets.bin", "doc_offsets.bin"])
def test_corrupted_offsets_are_refused(tmp_path, name):
    from bertcore.data.shards import Shards, first_descent

    shards, tok = build_shards(tmp_path, n_docs=60)
    f = tmp_path / "data" / name
    off = np.fromfile(f, np.int64)
    i = len(off) // 2
    off[i] = off[i - 1] - 1 if off[i - 1] > 0 else 0     # one entry goes back
    off[i] = min(off[i], off[i + 1] - 1) if off[i] >= off[i + 1] else off[i]
    off.tofile(f)
    assert first_descent(off) is not None
    with pytest.raises(UserError, match=rf"{name} goes back at entry .*; prepare it again"):
        Shards(tmp_path / "data", tok)
    # the check reads block by block, the same answer whatever the block
    assert {first_descent(off, b) for b in (1, 2, 7, 1 << 22)} == {first_descent(off)}
    assert first_descent(np.arange(10)) is None and first_descent(np.zeros(1)) is None


def test_long_sentences_are_named_as_the_cause(made, tmp_path):
    """A corpus with no sentence ends and no line breaks is one sentence per document, and a
    sequence starts at a sentence: a large corpus makes one sequence, and the message says so."""
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator
    from bertcore.data.prepare import prepare
    from bertcore.data.shards import Shards
    from bertcore.data.tokenizer import load_tokenizer

    tok = load_tokenizer(made / "tok")
    text = " ".join(" ".join(d.replace(".", "").replace("?", "").replace("!", "").split())
                    for d in synthetic_documents(60))
    prepare([text], tok, tmp_path / "d", progress=False, workers=1)
    it = BatchIterator(Shards(tmp_path / "d", tok), tok, TrainConfig(batch_size=4, seq_len=32))
    with pytest.raises(UserError) as e:
        next(it)
    msg = str(e.value)
    assert "sentences average" in msg and "--delimiters" in msg and "line breaks" in msg
    assert "larger corpus" not in msg


def test_pickle_refusal_never_advises_allowlisting(tmp_path):
    import torch

    from torchbert.model import read_hf_weights

    class Evil:
        def __reduce__(self):
            return (eval, ("1",))

    torch.save({"payload": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError) as e:
        read_hf_weights(tmp_path)
    msg = str(e.value)
    assert "refused" in msg and "could run code" in msg and "eval" in msg
    for advice in ("safe_globals", "allowlist", "add_safe", "weights_only=False",
                   "set to `False`", "\n"):
        assert advice not in msg, msg


# ---- tokenizer memory on one long line
# ------------------------------------------------------------

def test_long_lines_reach_the_trainer_in_pieces(monkeypatch):
    import bertcore.data.tokenizer as T

    text = "alpha beta\tgamma\ndelta " * 500 + "x" * 300
    parts = list(T.pieces(text, 100))
    assert "".join(parts) == text and all(len(p) <= 100 for p in parts)
    # cut after a whitespace, so no word is cut, but in a run of 300 characters without one
    assert all(p[-1].isspace() for p in parts[:-3]) and parts[-3:] == ["x" * 100] * 3
    assert [w for p in parts for w in p.split()] == text.split()[:-1] + ["x" * 100] * 3
    # the trainer counts the same words whether it sees a line whole or in pieces (its vocabulary
    # is the same up to the trainer's own nondeterminism, docs/data.md)
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()

    def words(t: str) -> list[str]:
        return [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))]

    doc = " ".join(synthetic_documents(40)).replace("\n", " ") + " Café, naïve — 東京!"
    assert [w for p in T.pieces(doc, 64) for w in words(p)] == words(doc)
    monkeypatch.setattr(T, "TRAIN_PIECE_CHARS", 64)
    seen = []
    monkeypatch.setattr(T.Tokenizer, "train_from_iterator",
                        lambda self, it, trainer: seen.extend(it), raising=False)
    with pytest.raises(UserError):     # the mock trained nothing
        T.train_tokenizer([doc], 150)
    assert len(seen) > 1 and max(map(len, seen)) <= 64 and "".join(seen) == doc
