"""Tests for bertcore.data.corpus (readers, sentences, the built-in corpus, the CLI) and
bertcore.data.imdb (the IMDB download and safe extraction, and finding the reviews a --corpus path
names).

Nothing here touches the network: downloads go to an HTTP server on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import os
import shlex
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from bertcore.data import imdb
from bertcore.data.corpus import builtin_documents, iter_documents, split_sentences
from bertcore.data.imdb import download_imdb
from bertcore.infra.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "no_proxy": "*", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bertcore.corpus", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


# ------------------------------------------------------------------------------ readers

def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("\ufeffFirst doc. Line one.\nLine two.\n\n \n\nSecond doc.\r\n\r\nThird.", "utf-8")
    assert list(iter_documents(str(f))) == ["First doc. Line one.\nLine two.", "Second doc.",
                                            "Third."]


def test_jsonl_reads_text_field_and_skips_blanks(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "One. Two."}\n\n{"text": "  ", "id": 2}\n{"text": "Three é."}\n',
                 "utf-8")
    assert list(iter_documents(str(f))) == ["One. Two.", "Three é."]


@pytest.mark.parametrize("bad", ['{"text": "ok"', '{"title": "no text"}', '{"text": 3}', "[1]"])
def test_jsonl_bad_line_names_file_and_line(tmp_path, bad):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "fine"}\n\n' + bad + "\n", "utf-8")
    docs = iter_documents(str(f))
    assert next(docs) == "fine"
    with pytest.raises(UserError, match=r"c\.jsonl:3: bad JSON line"):
        next(docs)


def make_aclimdb(root: Path) -> dict[str, bytes]:
    """A tiny aclImdb tree (as files, and as the tar members of the downloadable archive)."""
    files = {
        "aclImdb/README": b"Large Movie Review Dataset v1.0",
        "aclImdb/imdbEr.txt": b"0.1\n0.2\n",  # not a review: must be ignored
        "aclImdb/train/urls_pos.txt": b"http://www.imdb.com/title/tt0453418/usercomments\n",
        "aclImdb/train/pos/10_9.txt": b"Great film.<br /><br />Loved it!",
        "aclImdb/train/pos/2_8.txt": "Nice <BR/>caf\u00e9 scene.".encode(),
        "aclImdb/train/neg/0_1.txt": b"Bad.<br />Very bad.",
        "aclImdb/train/unsup/0_0.txt": b"Unlabelled review.",
        "aclImdb/test/pos/0_10.txt": b"Test positive.",
        "aclImdb/test/neg/0_2.txt": b"  <br />  ",  # blank after stripping: skipped
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


IMDB_DOCS = ["Great film.\nLoved it!", "Nice\ncafé scene.", "Bad.\nVery bad.",
             "Unlabelled review.", "Test positive."]


def test_aclimdb_layout_order_and_br_stripping(tmp_path):
    make_aclimdb(tmp_path)
    assert list(iter_documents(str(tmp_path / "aclImdb"))) == IMDB_DOCS
    assert list(iter_documents(str(tmp_path))) == IMDB_DOCS  # the directory holding aclImdb/


def test_imdb_source_uses_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINBERT_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="download-imdb.*--corpus DIR"):
        iter_documents("imdb")
    make_aclimdb(tmp_path)
    assert list(iter_documents("imdb")) == IMDB_DOCS


def test_directory_of_files_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("Bz.", "utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "A."}\n', "utf-8")
    (tmp_path / "c.txt").write_text("C1.\n\nC2.", "utf-8")
    (tmp_path / "notes.md").write_text("ignored", "utf-8")
    (tmp_path / ".hidden.txt").write_text("ignored", "utf-8")
    assert list(iter_documents(str(tmp_path))) == ["A.", "Bz.", "C1.", "C2."]


# ------------------------------------------------------------------------------ bad input

def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        iter_documents(str(tmp_path / "nope.txt"))


def test_unsupported_file_type(tmp_path):
    (tmp_path / "c.csv").write_text("a,b", "utf-8")
    with pytest.raises(UserError, match=r"unsupported.*\.csv"):
        iter_documents(str(tmp_path / "c.csv"))


@pytest.mark.parametrize("name,text", [("e.txt", "\n \n\n"), ("e.jsonl", '{"text": " "}\n'),
                                       ("dir", None)])
def test_empty_corpus(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, "utf-8") if text is not None else path.mkdir()
    with pytest.raises(UserError, match="empty"):
        list(iter_documents(str(path)))


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_file_names_file_and_offset(tmp_path, suffix):
    f = tmp_path / f"latin1{suffix}"
    line = '{"text": "ok"}\n' if suffix == ".jsonl" else "ok\n"
    f.write_bytes(line.encode() + "caf\u00e9".encode("latin-1"))
    with pytest.raises(UserError, match=rf"latin1\{suffix}.*byte offset {len(line) + 3}.*iconv"):
        list(iter_documents(str(f)))


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path):
    assert_one_line_error(run_cli("stats", "--corpus", str(tmp_path / "missing")), "missing")
    (tmp_path / "empty.txt").write_text("\n\n", "utf-8")
    assert_one_line_error(run_cli("stats", "--corpus", str(tmp_path / "empty.txt")), "empty")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe")
    assert_one_line_error(run_cli("stats", "--corpus", str(tmp_path / "bad.txt")), "bad.txt",
                          "byte offset 5")


def test_cli_stats(tmp_path):
    (tmp_path / "c.txt").write_text("One. Two? Three!\n\nFour.", "utf-8")
    proc = run_cli("stats", "--corpus", str(tmp_path / "c.txt"))
    assert proc.returncode == 0, proc.stderr
    assert "documents   2" in proc.stdout and "sentences   4" in proc.stdout


def test_imdb_does_not_import_corpus():
    code = "import sys, bertcore.data.imdb; assert 'bertcore.data.corpus' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# ------------------------------------------------------------------------------ sentences

@pytest.mark.parametrize("text,expected", [
    ("Hello there. How are you? Fine! Bye", ["Hello there.", "How are you?", "Fine!", "Bye"]),
    ("Version 3.11 is out.Really", ["Version 3.11 is out.Really"]),  # no space: no split
    ("Line one\nLine two.  \n\n  Three...   Four", ["Line one", "Line two.", "Three...", "Four"]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_custom_delimiters():
    assert split_sentences("a; b. c\nd", delimiters=";") == ["a;", "b. c", "d"]
    assert split_sentences("a. b\nc", delimiters="") == ["a. b", "c"]


# ------------------------------------------------------------------------------ built-in corpus

def test_builtin_corpus_is_big_english_and_deterministic():
    docs = list(builtin_documents())
    text = "\n".join(docs)
    assert len(text.encode()) > 1_000_000
    assert len(docs) > 500
    words = text.lower().split()
    for common in ("the", "of", "and", "is", "to"):
        assert words.count(common) > 1000, common
    assert ">>>" not in text
    assert all(doc == doc.strip() and len(doc) >= 300 for doc in docs)
    # A second call gives the same documents (compared on a prefix: a full run costs seconds).
    assert list(itertools.islice(builtin_documents(), 300)) == docs[:300]
    assert list(itertools.islice(iter_documents("builtin"), 3)) == docs[:3]


# ------------------------------------------------------------------------------ download

def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def good_archive(tmp_path: Path) -> bytes:
    files = make_aclimdb(tmp_path / "src")
    members = [(tarfile.TarInfo(name), data) for name, data in files.items()]
    link = tarfile.TarInfo("aclImdb/train/pos/link.txt")  # a link inside the tree is fine
    link.type, link.linkname = tarfile.SYMTYPE, "10_9.txt"
    hard = tarfile.TarInfo("aclImdb/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "aclImdb/README"
    return tar_gz(members + [(link, None), (hard, None)])


def evil_archive(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    ok = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
    data = None if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE) else b"pwned"
    return tar_gz([(ok, b"Fine."), (info, data)])


@pytest.fixture
def server(monkeypatch):
    """Serve `server.files` (path -> bytes) on 127.0.0.1; `server.requests` counts GETs."""
    monkeypatch.setenv("no_proxy", "*")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            httpd.requests += 1
            data = httpd.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests = {}, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_extract_and_idempotence(tmp_path, server, caplog):
    data = good_archive(tmp_path)
    server.files["/aclImdb_v1.tar.gz"] = data
    out = tmp_path / "cache"
    url = server.url + "/aclImdb_v1.tar.gz"
    target = download_imdb(out, url, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert target == out / "aclImdb" and (target / imdb.COMPLETE_MARKER).exists()
    assert (target / "train/pos/link.txt").read_text() == "Great film.<br /><br />Loved it!"
    assert (target / "hard").read_bytes() == (target / "README").read_bytes()
    assert list(iter_documents(str(out))) == IMDB_DOCS[:2] + IMDB_DOCS[:1] + IMDB_DOCS[2:]
    assert sorted(p.name for p in out.iterdir()) == ["aclImdb"]  # no temp files left
    assert server.requests == 1
    caplog.set_level("INFO", logger="bertcore")
    assert download_imdb(out, url, md5="0" * 32, progress=False) == target  # complete: no request
    assert server.requests == 1
    assert "IMDB is already downloaded" in caplog.text   # said through the module's logger


def test_download_with_md5(tmp_path, server):
    data = good_archive(tmp_path)
    server.files["/a.tgz"] = data
    download_imdb(tmp_path / "out", server.url + "/a.tgz", md5=hashlib.md5(data).hexdigest(),
                  progress=False)
    assert (tmp_path / "out/aclImdb/test/pos/0_10.txt").exists()


def test_checksum_mismatch_leaves_nothing(tmp_path, server):
    data = good_archive(tmp_path)
    server.files["/a.tgz"] = data[:-10] + b"corrupted!"
    actual = hashlib.sha256(server.files["/a.tgz"]).hexdigest()
    with pytest.raises(UserError, match=rf"expected sha256 {'ab' * 32}, got {actual}.*re-download"):
        download_imdb(tmp_path / "new", server.url + "/a.tgz", sha256="ab" * 32, progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError, match="checksum mismatch"):  # default: the published checksum
        download_imdb(tmp_path / "kept", server.url + "/a.tgz", progress=False)
    assert list((tmp_path / "kept").iterdir()) == []


@pytest.mark.parametrize("name,kind,linkname", [
    ("aclImdb/../evil.txt", tarfile.REGTYPE, ""),
    ("../evil.txt", tarfile.REGTYPE, ""),
    ("/tmp/twinbert-evil.txt", tarfile.REGTYPE, ""),
    ("aclImdb/evil", tarfile.SYMTYPE, "../../evil.txt"),
    ("aclImdb/evil", tarfile.SYMTYPE, "/etc/passwd"),
    ("aclImdb/up", tarfile.SYMTYPE, ".."),  # out of aclImdb/ once it is moved into place
    ("aclImdb/evil", tarfile.LNKTYPE, "../evil.txt"),
    ("aclImdb/evil", tarfile.CHRTYPE, ""),
])
def test_unsafe_archive_members_are_refused(tmp_path, server, name, kind, linkname):
    data = evil_archive(name, kind, linkname)
    server.files["/a.tgz"] = data
    out = tmp_path / "out"
    with pytest.raises(UserError, match=rf"unsafe archive member '{name}'"):
        download_imdb(out, server.url + "/a.tgz", sha256=hashlib.sha256(data).hexdigest(),
                      progress=False)
    assert not out.exists()
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/twinbert-evil.txt").exists()


def test_not_an_archive(tmp_path, server):
    server.files["/a.tgz"] = data = b"<html>a login page, not the archive</html>"
    with pytest.raises(UserError, match="not a readable .tar.gz"):
        download_imdb(tmp_path / "out", server.url + "/a.tgz",
                      sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert not (tmp_path / "out").exists()


def test_unreachable_url_and_http_error(tmp_path, server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz"
    with pytest.raises(UserError, match=rf"could not download {url}"):
        download_imdb(tmp_path / "out", url, progress=False)
    with pytest.raises(UserError, match="HTTP 404"):
        download_imdb(tmp_path / "out", server.url + "/missing.tgz", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_checksum_flag(tmp_path, server):
    with pytest.raises(UserError, match="64-digit hex"):
        download_imdb(tmp_path / "out", server.url + "/a.tgz", sha256="c40f74a1", progress=False)
    assert server.requests == 0 and not (tmp_path / "out").exists()


def test_existing_foreign_aclimdb_is_not_touched(tmp_path, server):
    make_aclimdb(tmp_path)
    with pytest.raises(UserError, match="not completed by download-imdb"):
        download_imdb(tmp_path, server.url + "/a.tgz", progress=False)
    assert server.requests == 0 and list(iter_documents(str(tmp_path))) == IMDB_DOCS


def test_cli_download_checksum_mismatch(tmp_path, server):
    server.files["/a.tgz"] = good_archive(tmp_path)
    proc = run_cli("download-imdb", "--out", str(tmp_path / "out"), "--url",
                   server.url + "/a.tgz", "--sha256", "0" * 64, "--no-progress")
    assert_one_line_error(proc, "checksum mismatch", "0" * 64)
    assert not (tmp_path / "out").exists()
    proc = run_cli("download-imdb", "--out", str(tmp_path / "out"), "--url", server.url + "/a.tgz",
                   "--sha256", hashlib.sha256(server.files["/a.tgz"]).hexdigest(), "--no-progress")
    assert proc.returncode == 0 and "verified" in proc.stdout, proc.stderr


def test_cli_download_then_corpus_dir_reads_the_reviews(tmp_path, server):
    """download-imdb --out DIR prints the --corpus to use next; that DIR (and DIR/aclImdb) read."""
    server.files["/a.tgz"] = data = good_archive(tmp_path)
    out = tmp_path / "my data"  # a space: the printed flag must be quoted to be usable as is
    proc = run_cli("download-imdb", "--out", str(out), "--url", server.url + "/a.tgz",
                   "--sha256", hashlib.sha256(data).hexdigest(), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    flag = proc.stdout.strip().splitlines()[-1].split("Use it with ", 1)[1]
    assert flag == f"--corpus {shlex.quote(str(out))}"  # not the cache: no "or --corpus imdb"
    reviews = IMDB_DOCS[:2] + IMDB_DOCS[:1] + IMDB_DOCS[2:]  # train/pos/link.txt -> 10_9.txt
    assert list(iter_documents(str(out))) == reviews
    assert list(iter_documents(str(out / "aclImdb"))) == reviews
    proc = run_cli("stats", *shlex.split(flag))
    assert proc.returncode == 0, proc.stderr
    assert f"documents   {len(reviews)}" in proc.stdout
    # again: nothing to do, and the same flag
    proc = run_cli("download-imdb", "--out", str(out), "--url", server.url + "/a.tgz",
                   "--no-progress")
    assert proc.returncode == 0 and "already" in proc.stdout, proc.stderr
    assert proc.stdout.rstrip().endswith(flag) and server.requests == 1


def test_cli_download_to_the_cache_also_names_corpus_imdb(tmp_path, server, monkeypatch):
    monkeypatch.setenv("TWINBERT_CACHE", str(tmp_path / "cache"))
    server.files["/a.tgz"] = data = good_archive(tmp_path)
    proc = run_cli("download-imdb", "--url", server.url + "/a.tgz", "--sha256",
                   hashlib.sha256(data).hexdigest(), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(
        f"--corpus {shlex.quote(str(tmp_path / 'cache'))} (or --corpus imdb)")
    assert list(iter_documents("imdb")) == list(iter_documents(str(tmp_path / "cache")))
    assert len(list(iter_documents("imdb"))) == len(IMDB_DOCS) + 1
