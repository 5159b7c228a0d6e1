"""The IMDB movie reviews (aclImdb): the layout, where they are cached, the download.

`download_imdb(out_dir)` fetches aclImdb_v1.tar.gz, verifies its checksum, extracts it safely
(nothing may land outside the target) and renames the complete tree to `out_dir/aclImdb`;
a failure leaves nothing behind. `find_aclimdb(path)` finds the tree a `--corpus` path names:
the aclImdb folder itself or the folder that `download-imdb --out` filled.
Reading the reviews is bertcore.data.corpus's job; so is the command line:

    python -m bertcore.corpus download-imdb --out DIR      then: --corpus DIR
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from bertcore.infra.errors import UserError
from bertcore.infra.files import cache_root

logger = logging.getLogger(__name__)


IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Published checksums of aclImdb_v1.tar.gz (84,125,825 bytes). SHA-256 from tensorflow_datasets
# (tensorflow_datasets/datasets/imdb_reviews/checksums.tsv); MD5 from torchtext
# (torchtext/datasets/imdb.py). We verify the SHA-256 unless the caller gives another checksum.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_SPLITS = ("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg")
COMPLETE_MARKER = ".twinbert-complete"  # written last into aclImdb/: its presence = complete
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Where a corpus path's reviews are

def is_aclimdb(path: Path) -> bool:
    """Whether `path` is an aclImdb tree (holds at least one of the review folders)."""
    return any((path / split).is_dir() for split in IMDB_SPLITS)


def find_aclimdb(path: str | os.PathLike) -> Path | None:
    """The aclImdb tree that `path` names: itself, or the `aclImdb/` that `download-imdb
    --out path` writes into it; None if neither."""
    path = Path(path).expanduser()
    for root in (path, path / "aclImdb"):
        if is_aclimdb(root):
            return root
    return None


def corpus_flag(out_dir: str | os.PathLike) -> str:
    """The `--corpus` argument that reads what `download_imdb(out_dir)` wrote."""
    flag = f"--corpus {shlex.quote(str(out_dir))}"
    if Path(out_dir).expanduser().resolve() == cache_root().resolve():
        flag += " (or --corpus imdb)"
    return flag


# ---------------------------------------------------------------------------------------------
# IMDB download: checksum-verified, safe extraction, idempotent, nothing partial left behind

def _unsafe(member: tarfile.TarInfo, why: str) -> UserError:
    return UserError(f"unsafe archive member {member.name!r}: {why}. Refusing to extract; the "
                     "archive is not the expected aclImdb_v1.tar.gz, check --url")


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _extract_safely(archive: Path, dest: Path) -> int:
    """Extract `archive` into the empty directory `dest`, refusing anything that could escape it.

    We write regular files and directories ourselves (safe modes, no owners) instead of trusting
    tarfile: absolute names, `..` components, links leading outside, device files and fifos are
    refused. The caller deletes `dest` on error, so a refusal leaves nothing extracted.
    """
    root = os.path.realpath(dest)
    count = 0
    try:
        with tarfile.open(archive, "r|*") as tar:  # stream: one pass over the compressed file
            for member in tar:
                count += _extract_member(tar, member, root)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"the downloaded file is not a readable .tar.gz archive ({e}). Check "
                        "--url and the checksum you passed") from None
    return count


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str) -> int:
    """Extract one member under `root` (after the checks); return 1 for a regular file, else 0."""
    name = member.name
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() \
            or PureWindowsPath(name).drive:
        raise _unsafe(member, "absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise _unsafe(member, "'..' path component")
    parts = PurePosixPath(name).parts
    if not parts:
        return 0  # "." : the root itself
    target = os.path.join(root, *parts)
    top = os.path.join(root, parts[0])  # links must stay inside e.g. aclImdb/
    # Resolve the parent for real, so a symlink extracted earlier cannot redirect us.
    parent = os.path.realpath(os.path.dirname(target))
    if not _inside(root, parent):
        raise _unsafe(member, "its parent directory leads outside the target")
    target = os.path.join(parent, os.path.basename(target))
    if member.isdir():
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif member.isfile():
        os.makedirs(parent, exist_ok=True)
        if os.path.islink(target):  # never write through a link from the archive
            os.unlink(target)
        with tar.extractfile(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        return 1
    elif member.issym():
        link = os.path.realpath(os.path.join(parent, member.linkname))
        if os.path.isabs(member.linkname) or not _inside(top, link):
            raise _unsafe(member, f"symlink to {member.linkname!r} outside the target")
        os.makedirs(parent, exist_ok=True)
        os.symlink(member.linkname, target)
    elif member.islnk():  # hard link names are relative to the archive root
        link = os.path.realpath(os.path.join(root, member.linkname))
        if os.path.isabs(member.linkname) or not _inside(top, link):
            raise _unsafe(member, f"hard link to {member.linkname!r} outside the target")
        if not os.path.isfile(link):
            raise _unsafe(member, f"hard link to {member.linkname!r}, not a file before it")
        os.makedirs(parent, exist_ok=True)
        os.link(link, target)
    else:
        raise _unsafe(member, "device file, fifo or other special file")
    return 0


def _fetch(url: str, dst: Path, progress: bool) -> tuple[str, str]:
    """Download `url` into `dst` in chunks with a progress bar; return (sha256, md5) hex digests."""
    from tqdm import tqdm  # only the download needs it

    sha256, md5 = hashlib.sha256(), hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dst, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=Path(urllib.parse.urlparse(url).path).name or "download",
                      disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        else:
            reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download {url} ({reason}). Check the network connection, "
                        "or pass --url with a reachable mirror") from None
    except ValueError as e:  # urlopen's "unknown url type"
        raise UserError(f"bad URL {url!r} ({e}). Pass an http:// or https:// URL") from None
    return sha256.hexdigest(), md5.hexdigest()


def download_imdb(out_dir: str | os.PathLike, url: str = IMDB_URL, *, sha256: str | None = None,
                  md5: str | None = None, progress: bool = True) -> Path:
    """Download and extract aclImdb into `out_dir/aclImdb`; return that path.

    The archive must match `sha256` (default: the published IMDB_SHA256) and/or `md5`. If
    `out_dir/aclImdb` is already complete, nothing is downloaded. On any failure nothing partial
    is left: the archive goes to a temporary file and is extracted into a temporary directory
    beside the target, which is renamed into place only after the marker file is written.
    """
    for digest, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value):
            raise UserError(f"--{digest} {value!r} is not a {length}-digit hex checksum. Pass the "
                            f"archive's published {digest} (or leave it out to use the built-in "
                            f"one)")
    out = Path(out_dir).expanduser()
    target = out / "aclImdb"
    if (target / COMPLETE_MARKER).exists():
        logger.info(f"IMDB is already downloaded at {target}; nothing to do. Use it with "
                    f"{corpus_flag(out)}")
        return target
    if target.exists():
        raise UserError(f"{target} exists but was not completed by download-imdb (no "
                        f"{COMPLETE_MARKER}). Remove it to download again, or use it directly "
                        f"with --corpus {target}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file. Pass a directory (it will hold aclImdb/)")
    if sha256 is None and md5 is None:
        sha256 = IMDB_SHA256
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".aclImdb_v1.tar.gz.part-", dir=out)
    os.close(fd)
    archive, tmp_dir = Path(name), Path(tempfile.mkdtemp(prefix=".aclImdb.tmp-", dir=out))
    try:
        got_sha256, got_md5 = _fetch(url, archive, progress)
        for digest, expected, actual in (("sha256", sha256, got_sha256), ("md5", md5, got_md5)):
            if expected is not None and expected.lower() != actual:
                raise UserError(f"checksum mismatch for {url}: expected {digest} "
                                f"{expected.lower()}, "
                                f"got {actual}. The download is corrupt or incomplete (or not the "
                                "official archive); run the command again to re-download")
        files = _extract_safely(archive, tmp_dir)
        extracted = tmp_dir / "aclImdb"
        if not is_aclimdb(extracted):
            raise UserError(f"{url} does not hold an aclImdb/ directory with train/ and test/ "
                            "reviews. Check --url")
        # The marker is written last: its presence means the directory is complete.
        (extracted / COMPLETE_MARKER).write_text(json.dumps(
            {"url": url, "sha256": got_sha256, "md5": got_md5, "files": files}) + "\n")
        os.rename(extracted, target)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not target.exists():  # a failed attempt leaves not even the directory
            try:
                out.rmdir()  # only if empty
            except OSError:
                pass
    logger.info(f"IMDB downloaded and verified: {files} files in {target}. Use it with "
                f"{corpus_flag(out)}")
    return target

