"""Fetch a peer project's released sdist, so its own tests can run against our adapters.

Usage: ``python scripts/peer_suite.py DISTRIBUTION [VERSION]`` prints the directory the sdist was
unpacked into. VERSION defaults to the version installed in this interpreter, so the tests match
the code they exercise. Nothing of the peer is copied into the project: the sdist is downloaded
from PyPI at test time, checked against the sha256 PyPI publishes, and unpacked under
``.peer-suites/`` (git-ignored), where later runs find it again.

Tests call :func:`peer_suite` and skip (fail under ``CI=true``) when the download is impossible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SHAREDSTATE_PEER_SUITES", ROOT / ".peer-suites"))
INDEX = os.environ.get("SHAREDSTATE_PEER_INDEX", "https://pypi.org/simple")


class PeerSuiteUnavailable(RuntimeError):
    """The sdist could not be downloaded or verified."""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sdist_url(distribution: str, version: str) -> tuple[str, str]:
    # PEP 691: the simple index as JSON, with the sha256 of every file.
    url = f"{INDEX}/{_normalized(distribution)}/"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise PeerSuiteUnavailable(f"cannot read {url}: {exc}") from exc
    for file in files:
        name, _, rest = file["filename"].rpartition("-")
        if rest == f"{version}.tar.gz" and _normalized(name) == _normalized(distribution):
            return file["url"], file["hashes"]["sha256"]
    raise PeerSuiteUnavailable(f"{distribution} {version} has no sdist on {INDEX}")


def peer_suite(distribution: str, version: str | None = None) -> Path:
    """Return the unpacked sdist of ``distribution`` (default: the installed version)."""
    if version is None:
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError as exc:
            raise PeerSuiteUnavailable(f"{distribution} is not installed") from exc
    target = CACHE / f"{distribution.lower()}-{version}"
    if (target / ".complete").exists():
        return target
    url, sha256 = _sdist_url(distribution, version)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        archive = Path(scratch) / "sdist.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise PeerSuiteUnavailable(f"cannot download {url}: {exc}") from exc
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha256:
            raise PeerSuiteUnavailable(f"{url}: sha256 {digest} is not the published {sha256}")
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        (top,) = unpacked.iterdir()  # an sdist holds one top-level directory
        (top / ".complete").touch()
        # Another test process may have finished first; either copy is the same release.
        try:
            top.rename(target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    return target


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        sys.exit(__doc__)
    try:
        print(peer_suite(*sys.argv[1:]))
    except PeerSuiteUnavailable as exc:
        sys.exit(f"peer_suite: {exc}")
