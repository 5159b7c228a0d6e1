"""bertcore's command lines end to end, and their one-line errors."""

import os
import subprocess
import time

import pytest

from helpers import ROOT, assert_one_line_error, program, run_cli, synthetic_documents


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "corpus.txt").write_text("\n\n".join(synthetic_documents(300)), encoding="utf-8")
    return d


def test_train_tokenizer_then_prepare_then_show(corpus):
    tok = corpus / "tok"
    p = run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(corpus / "corpus.txt"),
                "--vocab-size", "200", "--out", str(tok))
    assert p.returncode == 0, p.stderr
    assert (tok / "vocab.txt").is_file() and "WordPiece" in p.stdout
    p = run_cli("-m", "bertcore.data", "prepare", "--corpus", str(corpus / "corpus.txt"),
                "--tokenizer", str(tok), "--out", str(corpus / "data"), "--seq-len", "64",
                "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "MB/s" in p.stdout and "sequences per epoch" in p.stdout
    # --seq-len built epoch 0's order where a default training run at that length opens it
    built = sorted((corpus / "data" / "epochs").glob("*-epoch0.npy"))
    assert len(built) == 1
    from bertcore.model.config import TrainConfig
    from bertcore.data.batches import BatchIterator
    from bertcore.data.shards import Shards
    shards = Shards(corpus / "data")
    it = BatchIterator(shards, shards.tokenizer(), TrainConfig(batch_size=4, seq_len=64))
    assert it._epoch_file() == built[0]
    mtime = built[0].stat().st_mtime_ns
    next(it)
    assert built[0].stat().st_mtime_ns == mtime   # opened, not rebuilt
    p = run_cli("-m", "bertcore.data", "show", str(corpus / "data"), "--seq-len", "32")
    assert p.returncode == 0, p.stderr
    assert "[CLS]" in p.stdout and "predict:" in p.stdout
    # nothing good is overwritten without --overwrite
    before = (tok / "vocab.txt").read_text()
    p = run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(corpus / "corpus.txt"),
                "--vocab-size", "300", "--out", str(tok))
    assert_one_line_error(p, "already exists", "--overwrite")
    assert (tok / "vocab.txt").read_text() == before


def test_cli_errors_are_one_line(corpus, tmp_path):
    assert_one_line_error(
        run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(tmp_path / "missing.txt"),
                "--out", str(tmp_path / "t")), "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    assert_one_line_error(
        run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(tmp_path / "empty.txt"),
                "--out", str(tmp_path / "t")), "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait. ".encode("latin-1") * 20)
    assert_one_line_error(
        run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(tmp_path / "latin1.txt"),
                "--out", str(tmp_path / "t")), "latin1.txt", "UTF-8")
    assert_one_line_error(
        run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(corpus / "corpus.txt"),
                "--vocab-size", "20", "--out", str(tmp_path / "t")), "vocab-size=20")
    assert not (tmp_path / "t").exists()
    # shards built with another tokenizer, used through a command-line entry point
    from helpers import build_shards

    build_shards(tmp_path, n_docs=30)
    other = tmp_path / "other"
    (tmp_path / "other.txt").write_text("\n\n".join(synthetic_documents(50, seed=9)) +
                                        "\n\nzebra quokka axolotl narwhal.")
    assert run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(tmp_path / "other.txt"),
                   "--vocab-size", "150", "--out", str(other)).returncode == 0
    p = run_cli("-m", "bertcore.data", "show", str(tmp_path / "data"))
    assert p.returncode == 0, p.stderr
    # a run directory is not data: say so, and which data it trained on
    import json
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"framework": "torch",
                                              "data": str(tmp_path / "data")}))
    assert_one_line_error(run_cli("-m", "bertcore.data", "show", str(run)),
                          "is a training run", f"bertcore.data show {tmp_path / 'data'}")
    p = subprocess.run(program("open_shards", str(tmp_path / "data"), str(other)), cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                       text=True)
    assert_one_line_error(p, "another tokenizer")


def test_runs_started_together_build_the_corpus_cache_once(tmp_path):
    """A second run on the same corpus (the other twin, say) waits for the first to build the
    cached tokenizer and shards, then uses them: one tokenizer, trained once."""
    from bertcore.infra.files import file_lock
    from bertcore.data.corpus import corpus_key as _corpus_key

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(synthetic_documents(300)), encoding="utf-8")
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TWINBERT_CACHE": str(cache)}

    def start():
        return subprocess.Popen(program("resolve_data", str(corpus)), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # While another process holds the corpus's lock, a run waits and builds nothing.
    lock = cache / "locks" / f"{_corpus_key(str(corpus))}-v300.lock"
    with file_lock(lock):
        first = start()
        assert "waiting for another process" in first.stdout.readline()
        time.sleep(1.0)
        assert first.poll() is None and not (cache / "tokenizers").exists()
    # Two more at once, after it: all three use the one tokenizer and data directory.
    others = [start(), start()]
    outs = [p.communicate(timeout=300) for p in [first, *others]]
    assert all(p.returncode == 0 for p in [first, *others]), [e for _, e in outs]
    built = {ln for out, _ in outs for ln in out.splitlines() if ln.startswith("built ")}
    assert len(built) == 1, built
    said = "".join(out for out, _ in outs)
    assert said.count("training a 300-entry WordPiece tokenizer") == 1, said
    assert said.count("tokenizing ") == 1, said
    assert len(list((cache / "tokenizers").iterdir())) == 1


def test_an_error_shows_once_beside_a_basicconfig_handler(capsys):
    """absl calls logging.basicConfig() at its first message (orbax logs at import): the root
    handler it adds passes other libraries' messages but not the project's, shown already."""
    import logging
    import sys

    from bertcore.infra.errors import UserError, cli_entry

    @cli_entry
    def main(argv):
        logging.getLogger("otherlib").warning("theirs")
        raise UserError("boom")

    h = logging.StreamHandler(sys.stderr)       # what logging.basicConfig() adds
    logging.root.addHandler(h)
    try:
        assert main([]) == 2
    finally:
        logging.root.removeHandler(h)
    assert capsys.readouterr().err.splitlines() == ["theirs", "error: boom"]
