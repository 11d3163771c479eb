"""What a package index and a distribution get: the sdist's contents, its metadata, the README.

The sdist is built the way a release is (``python -m build --sdist``, in an isolated environment),
into a temporary directory. It ships the test suite whole or not at all: here, whole, and the test
below runs its collection from the unpacked sdist to prove it.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parent.parent
REPO = "https://github.com/sharedstate/sharedstate"


class Sdist:
    def __init__(self, archive: Path, build_log: str) -> None:
        self.archive = archive
        self.build_log = build_log
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            self.top = top
            self.files = {name[len(top) + 1 :] for name in tar.getnames() if tar.getmember(name).isfile()}
            member = tar.extractfile(f"{top}/PKG-INFO")
            assert member is not None
            self.metadata = email.parser.Parser().parsestr(member.read().decode("utf-8"))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Sdist:
    if importlib.util.find_spec("build") is None:
        servers.unavailable("the 'build' package is not installed (it is in the dev extra)")
    out = tmp_path_factory.mktemp("sdist")
    # Built from a copy of the files git would ship: setuptools writes src/*.egg-info into the tree
    # it builds, and an egg-info under src/ registers the package's entry points a second time for
    # every process that puts src/ on its path (the flake8 plugin test does).
    tree = tmp_path_factory.mktemp("tree")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    (archive,) = out.glob("*.tar.gz")
    return Sdist(archive, log)


def test_sdist_ships_the_license(sdist: Sdist) -> None:
    assert "LICENSE" in sdist.files
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    assert sdist.metadata["License-Expression"] == "BSD-3-Clause"
    assert sdist.metadata.get_all("License-File") == ["LICENSE"]
    # PEP 639: with a License-Expression, no "License ::" classifier.
    assert not [c for c in sdist.metadata.get_all("Classifier") or [] if c.startswith("License ::")]


def _suite_files(root: Path) -> set[str]:
    """The test suite's files on disk, as paths relative to ``root`` (caches left out)."""
    return {
        path.relative_to(root).as_posix()
        for path in (root / "tests").rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and ".hypothesis" not in path.parts
        and not path.name.endswith((".pyc", ".pyo"))
    }


def test_sdist_ships_the_test_suite_whole(sdist: Sdist) -> None:
    shipped = {name for name in sdist.files if name.startswith("tests/")}
    if not shipped:
        return  # not at all is the other honest choice
    for needed in ("tests/__init__.py", "tests/conftest.py", "tests/servers.py", "tests/workers.py"):
        assert needed in shipped
    assert any(name.startswith("tests/apps/") for name in shipped)
    assert any(name.startswith("tests/lint_corpus/") for name in shipped)
    assert _suite_files(ROOT) <= shipped, sorted(_suite_files(ROOT) - shipped)
    assert "docs/tools.md" in sdist.files  # tests/test_lint.py reads it


def test_sdist_test_suite_collects(sdist: Sdist, tmp_path: Path) -> None:
    """The shipped tests import: conftest, helpers and every module, from the unpacked sdist alone."""
    with tarfile.open(sdist.archive) as tar:
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / sdist.top
    env = {**os.environ, "PYTHONPATH": str(unpacked / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+(/\d+)? tests? collected", result.stdout, re.MULTILINE), result.stdout[-2000:]
    assert "error" not in result.stdout.lower().splitlines()[-1]


def test_build_prints_no_deprecation(sdist: Sdist) -> None:
    """setuptools' deprecation boxes (license table, License classifiers) are gone."""
    assert "deprecat" not in sdist.build_log.lower(), sdist.build_log


def test_metadata_for_the_package_index(sdist: Sdist) -> None:
    classifiers = sdist.metadata.get_all("Classifier") or []
    for expected in (
        "Framework :: Flask",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Internet :: WWW/HTTP",
        "Typing :: Typed",
    ):
        assert expected in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    requires = sdist.metadata["Requires-Python"]
    minimum = int(re.fullmatch(r">=3\.(\d+)", requires).group(1))  # type: ignore[union-attr]
    versions = sorted(int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c))
    assert versions and versions[0] == minimum, (requires, versions)
    urls = dict(entry.split(", ", 1) for entry in sdist.metadata.get_all("Project-URL") or [])
    assert {"Documentation", "Source", "Changelog"} <= set(urls)
    assert all(url.startswith(REPO) for url in urls.values()), urls


# -- README: what the package index page shows -----------------------------------------------

_INLINE_LINK = re.compile(r"\]\(([^)\s]+)\)")
_REFERENCE = re.compile(r"^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def _readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return _INLINE_LINK.findall(text) + _REFERENCE.findall(text)


def test_readme_links_are_absolute() -> None:
    """A package index shows the README alone: a relative link there leads nowhere."""
    links = _readme_links()
    assert links
    relative = [link for link in links if not link.startswith(("https://", "#"))]
    assert not relative


def test_readme_links_into_the_repository_name_files_that_exist() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist has no benchmarks/)")
    prefix = re.compile(rf"^{re.escape(REPO)}/(?:blob|tree)/main/(.+)$")
    targets = [m.group(1) for link in _readme_links() if (m := prefix.match(link))]
    assert targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing


def test_readme_first_screen_is_the_two_commands() -> None:
    first_screen = (ROOT / "README.md").read_text().splitlines()[:15]
    assert any(line.startswith("make demo") for line in first_screen)
    assert any(line.startswith("make test") for line in first_screen)


# -- make test says what it installs ---------------------------------------------------------


def test_make_says_before_installing_memcached() -> None:
    """``make test`` announces the apt-get install (what, why, what a failure means) before it."""
    recipe = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "memcached"], capture_output=True, text=True, timeout=30
    )
    if recipe.returncode != 0:
        pytest.skip(f"make is not available: {recipe.stderr.strip()}")
    text = recipe.stdout
    announce = text.find('echo "make: installing memcached')
    install = text.find("apt-get install -y")
    assert 0 <= announce < install, text
    said = text[announce:install]
    assert "skip" in said and "CI=true" in said, said
