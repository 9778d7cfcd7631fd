"""Fetching MNIST-format datasets from their public mirrors, checksum-verified before use.

Each file is streamed to a temporary file and renamed into place only once its MD5 passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from common.data.idx import (
    CHUNK_BYTES,
    DEFAULT_MAX_IDX_BYTES,
    IDX_FILE_NAMES,
    Checksums,
    find_idx_file,
    gunzip_md5,
)
from common.data.spec import get_spec
from common.errors import ChecksumError, DatasetError

#: Per socket operation (connect, each read) of a download, not per file: a slow but live
#: mirror may take longer overall, a dead one is abandoned after this long.
DEFAULT_TIMEOUT_S: Final = 30.0

#: Sent with downloads; some mirrors refuse urllib's default agent.
USER_AGENT: Final = "semalign-datasets/0.1 (+urllib)"

#: Mirrors tried in order by :func:`download_dataset` when none are given. A test may
#: monkeypatch an entry to point ``load_dataset(download=True)`` at a local server.
DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}


def download_dataset(
    name: str,
    dest: str | Path,
    *,
    mirrors: Sequence[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Fetch ``name``'s four IDX files into ``dest`` and return ``dest``.

    Files already in ``dest`` (raw or gzipped) are left alone; :func:`load_dataset` verifies
    them. Each missing file is tried on every mirror in turn (``timeout_s`` bounds each socket
    operation), streamed to a temporary file in ``dest`` and renamed into place only once
    its checksum passes. Raises ``DatasetError`` when no mirror delivers, ``ChecksumError``
    when a mirror delivered but the file was not the published one.
    """
    if not get_spec(name).files:
        raise DatasetError(f"{name} is bundled with scikit-learn; there is nothing to download")
    chosen = tuple(mirrors) if mirrors is not None else DEFAULT_MIRRORS[name]
    if not chosen:
        raise DatasetError(f"{name}: no mirrors to download from; pass at least one URL")
    directory = Path(dest)
    missing = [stem for stem in IDX_FILE_NAMES if find_idx_file(directory, stem) is None]
    download_files(name, directory, missing, chosen, timeout_s=timeout_s)
    return directory



class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the next mirror is tried."""


class _BadDownload(Exception):
    """A mirror delivered a file that is not the published one."""


def download_files(
    name: str, directory: Path, stems: Sequence[str], mirrors: Sequence[str], *, timeout_s: float
) -> None:
    if not stems:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"{name}: cannot create download directory {directory}: {exc}") from exc
    for stem in stems:
        _download_one(name, directory, stem, mirrors, timeout_s)


def _download_one(
    name: str, directory: Path, stem: str, mirrors: Sequence[str], timeout_s: float
) -> None:
    filename = f"{stem}.gz"
    sums = get_spec(name).files[stem]
    failures: list[str] = []
    bad_content = False
    for mirror in mirrors:
        url = _join_url(mirror, filename)
        try:
            _fetch_verified(url, directory / filename, sums, timeout_s)
        except _MirrorFailed as exc:
            failures.append(f"{url} ({exc})")
            continue
        except _BadDownload as exc:
            bad_content = True
            failures.append(f"{url} ({exc})")
            continue
        return
    tried = "; ".join(failures)
    by_hand = (
        f"Download {', '.join(f'{s}.gz' for s in IDX_FILE_NAMES)} by hand into a directory "
        "and pass --data-dir DIR."
    )
    if bad_content:
        raise ChecksumError(
            f"{name}: no mirror delivered the published {filename} "
            f"(expected md5 {sums.gz_md5} or uncompressed md5 {sums.raw_md5}). "
            f"Tried: {tried}. {by_hand}"
        )
    raise DatasetError(
        f"{name}: could not download {filename} from any mirror; the machine looks offline "
        f"or the mirrors are unreachable. Tried: {tried}. {by_hand}"
    )


def _join_url(mirror: str, filename: str) -> str:
    return mirror if mirror.endswith(filename) else mirror.rstrip("/") + "/" + filename


def _fetch_verified(url: str, target: Path, sums: Checksums, timeout_s: float) -> None:
    """Stream ``url`` to a temporary file beside ``target``; rename it into place only if
    its checksum passes. Nothing is left behind on failure."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise _MirrorFailed(f"unsupported URL scheme {scheme!r}; expected http or https")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise DatasetError(f"cannot write to {target.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            file_md5 = _fetch_to(url, out, timeout_s)
            out.flush()
            os.fsync(out.fileno())
        if file_md5 != sums.gz_md5 and sums.raw_md5 not in (
            file_md5,
            gunzip_md5(tmp, DEFAULT_MAX_IDX_BYTES),
        ):
            raise _BadDownload(
                f"checksum mismatch: expected md5 {sums.gz_md5} (official .gz) or "
                f"uncompressed md5 {sums.raw_md5}, found {file_md5}"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise DatasetError(f"cannot write {target}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch_to(url: str, out: IO[bytes], timeout_s: float) -> str:
    """Copy the body of ``url`` into ``out``; returns its MD5. Network trouble of any kind
    becomes ``_MirrorFailed``; trouble writing ``out`` propagates as ``OSError``."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status != 200:
                raise _MirrorFailed(f"HTTP {response.status}")
            for chunk in _iter_body(response):
                total += len(chunk)
                # A published file is well under the IDX bound; a bigger body is not one.
                if total > DEFAULT_MAX_IDX_BYTES:
                    raise _MirrorFailed(f"response larger than {DEFAULT_MAX_IDX_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _MirrorFailed(str(exc.reason)) from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as exc:
        raise _MirrorFailed(f"{type(exc).__name__}: {exc}") from exc
    return digest.hexdigest()


def _iter_body(response: io.BufferedIOBase | http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read(CHUNK_BYTES):
        yield chunk
