"""Precision and recall of ``sharedstate lint`` on the labelled corpus, and its runtime on a 2,000-file
tree. ``python tests/lint_eval.py`` prints both; tests/test_lint.py asserts the targets through
:func:`evaluate`.

Labels (see tests/lint_corpus/real/MANIFEST.toml): ``# expect: SSxxx`` on a line that must be
reported with that code; ``# quiet: why`` on a look-alike that must not be; every unmarked line must
not be reported either. A finding counts as a true positive when its (file, line, code) is labelled.
Codes off by default (SS201) are not enabled: the default run is what people keep in pre-commit.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

CORPUS = Path(__file__).parent / "lint_corpus"
REAL = CORPUS / "real"
_EXPECT = re.compile(r"#\s*expect:\s*(SS\d{3})")
_QUIET = re.compile(r"#\s*quiet:")


@dataclass
class Score:
    expected: int = 0
    found: int = 0
    true_positives: int = 0
    lookalikes: int = 0
    lookalikes_reported: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.expected if self.expected else 1.0

    def add(self, other: Score) -> None:
        self.expected += other.expected
        self.found += other.found
        self.true_positives += other.true_positives
        self.lookalikes += other.lookalikes
        self.lookalikes_reported += other.lookalikes_reported
        self.misses += other.misses
        self.false_alarms += other.false_alarms


def _categories() -> dict[Path, str]:
    manifest = tomllib.loads((REAL / "MANIFEST.toml").read_text())
    return {REAL / name: entry["category"] for name, entry in manifest["files"].items()}


def corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.py"))


def category_of(path: Path, categories: dict[Path, str]) -> str:
    if path in categories:
        return categories[path]
    if REAL in path.parents:  # a package: the category of the file of it the manifest names
        siblings = [category for named, category in categories.items() if named.parent == path.parent]
        return siblings[0] if siblings else path.parent.name
    return "original"


def evaluate() -> dict[str, Score]:
    """Score per category, and ``"overall"``: the whole corpus linted in one run, as the CLI does."""
    from sharedstate.tools.lint import Project, lint_path

    categories = _categories()
    project = Project()
    scores: dict[str, Score] = {}
    for path in corpus_files():
        lines = path.read_text().splitlines()
        expected = {(n, code) for n, line in enumerate(lines, 1) for code in _EXPECT.findall(line)}
        quiet = {n for n, line in enumerate(lines, 1) if _QUIET.search(line)}
        findings = {(f.line, f.code): f for f in lint_path(path, project)}
        score = scores.setdefault(category_of(path, categories), Score())
        score.expected += len(expected)
        score.found += len(findings)
        score.true_positives += len(expected & findings.keys())
        score.lookalikes += len(quiet)
        score.lookalikes_reported += len({line for line, _ in findings} & quiet)
        rel = path.relative_to(CORPUS)
        score.misses += [
            f"{rel}:{line}: {code} not reported" for line, code in sorted(expected - findings.keys())
        ]
        score.false_alarms += [findings[key].text() for key in sorted(findings.keys() - expected)]
    overall = Score()
    for score in scores.values():
        overall.add(score)
    scores["overall"] = overall
    return scores


def make_tree(root: Path, files: int = 2000) -> None:
    """A project of ``files`` modules: the corpus copied over and over into packages."""
    sources = [p for p in corpus_files() if p.name != "__init__.py"]
    for i in range(files):
        package = root / f"pkg{i // 50}"
        if not package.exists():
            package.mkdir(parents=True)
            (package / "__init__.py").write_text("")
        shutil.copyfile(sources[i % len(sources)], package / f"mod{i}.py")


def time_cli(files: int = 2000) -> tuple[float, float]:
    """(wall seconds, CPU seconds) the ``sharedstate lint`` command takes on a generated project of
    ``files`` modules. The CPU time is what an idle machine's wall time would be (one process)."""
    with tempfile.TemporaryDirectory() as tmp:
        make_tree(Path(tmp), files)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sharedstate", "lint", tmp],
            capture_output=True,
            check=False,
            timeout=600,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-timing", action="store_true", help="skip the 2,000-file runtime check")
    parser.add_argument("-v", "--verbose", action="store_true", help="list misses and false alarms")
    args = parser.parse_args()
    scores = evaluate()
    header = ("category", "expected", "found", "TP", "look-alikes", "precision", "recall")
    print("{:<20} {:>8} {:>6} {:>4} {:>11} {:>9} {:>7}".format(*header))
    for name, s in sorted(scores.items(), key=lambda item: (item[0] == "overall", item[0])):
        quiet = f"{s.lookalikes_reported}/{s.lookalikes}"
        print(
            f"{name:<20} {s.expected:>8} {s.found:>6} {s.true_positives:>4} {quiet:>11} "
            f"{s.precision:>9.3f} {s.recall:>7.3f}"
        )
    overall = scores["overall"]
    if args.verbose or overall.misses or overall.false_alarms:
        for line in overall.misses:
            print("MISS", line)
        for line in overall.false_alarms:
            print("FALSE ALARM", line)
    if not args.no_timing:
        wall, cpu = time_cli()
        print(f"runtime: 2000 files in {wall:.2f} s wall, {cpu:.2f} s CPU (`sharedstate lint DIR`)")
    return 0 if overall.precision >= 0.90 and overall.recall >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
