"""``sharedstate lint``: the corpus in tests/lint_corpus/ with exact expected findings, and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sharedstate.cli import main
from sharedstate.tools.lint import CODES, lint_path, lint_source

CORPUS = Path(__file__).parent / "lint_corpus"
SHAREDSTATE = Path(sys.executable).parent / "sharedstate"
_EXPECT = re.compile(r"#\s*expect:\s*(SS\d{3})")


def expected_in(path: Path) -> list[tuple[int, str]]:
    """(line, code) for every ``# expect: SSxxx`` marker in a corpus file."""
    found = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        found += [(lineno, code) for code in _EXPECT.findall(line)]
    return found


def actual(path: Path) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in lint_path(path)]


def test_classic_app_is_found_exactly() -> None:
    findings = lint_path(CORPUS / "classic_app.py")
    assert [(f.line, f.col, f.code) for f in findings] == [(22, 16, "SS106")]
    message = findings[0].message
    assert "global_obj.query()" in message
    assert "self.param += 1 at line 13" in message
    assert "store.edit('global_obj')" in message
    assert "handler 'home'" in message


def test_positive_corpus_exact() -> None:
    path = CORPUS / "positive_app.py"
    expected = expected_in(path)
    # The markers themselves are pinned, so an edit that drops one is noticed.
    assert len(expected) == 22
    assert {code for _, code in expected} == {"SS101", "SS102", "SS103", "SS104", "SS105", "SS106"}
    assert actual(path) == expected


def test_negative_corpus_is_clean() -> None:
    path = CORPUS / "negative_app.py"
    assert expected_in(path) == []
    assert lint_path(path) == []


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.name)
def test_every_corpus_file_matches_its_markers(path: Path) -> None:
    assert actual(path) == expected_in(path)


def test_suggestions_name_the_replacement() -> None:
    path = CORPUS / "positive_app.py"
    lines = path.read_text().splitlines()
    by_text = {lines[f.line - 1].strip(): f.message for f in lint_path(path)}

    def message(prefix: str) -> str:
        return next(m for text, m in by_text.items() if text.startswith(prefix))

    assert "store.counter('counter').incr()" in message("counter += 1")  # global int
    assert "store.dict('settings')[key] = value" in message('settings["theme"] = "dark"')  # dict item
    assert "store.dict('by_user').incr(key)" in message('by_user["bob"] += 1')  # += on a dict item
    assert "store.edit('client')" in message("client.timeout = 5")  # attribute of an object
    assert "called from handler 'record'" in message("log.extend")  # through helper() -> deeper()


def lint(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in lint_source(textwrap.dedent(source))]


def test_noqa_silences_all_or_named_codes() -> None:
    source = """
        from flask import Flask
        app = Flask(__name__)
        log = []
        @app.route("/")
        def view():
            log.append(1)  # noqa
            log.append(2)  # noqa: SS105
            log.append(3)  # noqa: SS101
            log.append(4)
    """
    assert lint(source) == [(9, "SS105"), (10, "SS105")]


def test_rebinding_a_global_constant_is_reported_but_reading_is_not() -> None:
    source = """
        from flask import Flask
        app = Flask(__name__)
        MODE = "a"
        @app.route("/read")
        def read():
            global MODE
            return MODE
        @app.route("/write")
        def write():
            global MODE
            MODE = "b"
            del MODE
    """
    assert lint(source) == [(12, "SS101"), (13, "SS101")]


def test_recursive_helpers_and_class_hierarchies_terminate() -> None:
    source = """
        from flask import Flask
        app = Flask(__name__)
        data = {}
        class A:
            def f(self):
                return self.g()
            def g(self):
                return self.f()
        a = A()
        def ping(n):
            return pong(n)
        def pong(n):
            data["n"] = n
            return ping(n)
        @app.post("/")
        def view():
            a.f()
            return ping(1)
    """
    assert lint(source) == [(14, "SS103")]


def test_handler_only_via_fastapi_style_and_bare_decorators() -> None:
    source = """
        from bottle import get
        from fastapi import FastAPI
        api = FastAPI()
        seen = set()
        @api.get("/")
        async def root():
            seen.add(1)
        @get("/b")
        def bottle_view():
            seen.add(2)
        @other_decorator
        def not_a_view():
            seen.add(3)
    """
    assert lint(source) == [(8, "SS105"), (11, "SS105")]


def test_syntax_error_is_reported_not_raised() -> None:
    findings = lint_source("def broken(:\n    pass\n", "bad.py")
    assert [(f.path, f.line, f.code) for f in findings] == [("bad.py", 1, "SS900")]


def test_codes_are_documented() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    for code in CODES:
        assert code in docs


# --- the command line ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHAREDSTATE), "lint", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.timeout(120)
def test_cli_exit_codes_and_text_format(tmp_path: Path) -> None:
    clean = run_cli(str(CORPUS / "negative_app.py"))
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")

    dirty = run_cli(str(CORPUS / "classic_app.py"))
    assert dirty.returncode == 1
    lines = dirty.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{CORPUS / 'classic_app.py'}:22:16: SS106 ")

    broken = tmp_path / "broken.py"
    broken.write_text("x = (\n")
    result = run_cli(str(broken), str(CORPUS / "classic_app.py"))
    assert result.returncode == 2
    assert f"{broken}:1:" in result.stdout and "SS900" in result.stdout
    assert "Traceback" not in result.stderr

    missing = run_cli(str(tmp_path / "nope.py"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"sharedstate lint: no such file or directory: {tmp_path / 'nope.py'}"
    ]

    usage = run_cli("--format", "xml", str(CORPUS))
    assert usage.returncode == 2


def test_directory_walk_and_json_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["lint", "--format", "json", str(CORPUS)]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert {tuple(f) for f in findings} == {("path", "line", "col", "code", "message")}
    per_file: dict[str, int] = {}
    for f in findings:
        per_file[Path(f["path"]).name] = per_file.get(Path(f["path"]).name, 0) + 1
    assert per_file == {"classic_app.py": 1, "positive_app.py": 22}

    hidden = tmp_path / ".venv" / "lib"
    hidden.mkdir(parents=True)
    (hidden / "bad.py").write_text(
        "from flask import Flask\napp = Flask(__name__)\nx = []\n@app.route('/')\ndef v():\n    x.append(1)\n"
    )
    assert main(["lint", str(tmp_path)]) == 0  # virtualenvs and hidden directories are skipped
    assert main(["lint", str(hidden / "bad.py")]) == 1  # but a file named explicitly is checked


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sharedstate", "lint", str(CORPUS / "classic_app.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert ":22:16: SS106 " in result.stdout


def test_read_only_method_of_module_instance_is_followed_into_module_state() -> None:
    source = """
        from flask import Flask
        app = Flask(__name__)
        audit = []
        class Service:
            def handle(self, x):
                audit.append(x)
                return x
        service = Service()
        @app.route("/")
        def view():
            return service.handle(1)
    """
    findings = lint_source(textwrap.dedent(source))
    assert [(f.line, f.code) for f in findings] == [(7, "SS105")]
    assert "in 'handle', called from handler 'view'" in findings[0].message


def test_counter_update_suggests_incr() -> None:
    source = """
        from collections import Counter
        from flask import Flask
        app = Flask(__name__)
        words = Counter()
        @app.route("/")
        def view():
            words.update(["a"])
    """
    findings = lint_source(textwrap.dedent(source))
    assert [(f.line, f.code) for f in findings] == [(8, "SS105")]
    assert "store.dict('words').incr(key, by)" in findings[0].message
