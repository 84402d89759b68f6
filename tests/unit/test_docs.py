"""The docs say what the code does: docs/cli.md is the parser's own account (scripts/cli_reference.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from modelship import cli
from support import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_what_the_parser_says():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (ROOT / "docs" / "cli.md").read_text()
    # every verb and every listed option of the parser is in it; the hidden old spellings are not
    for name, sp, _ in _generator()._verbs(cli.build_parser()):
        assert f"\n## {name}\n" in text
        for action in sp._actions:
            for option in set(action.option_strings) - {"-h", "--help"}:
                assert (f"`{option}" in text) == (action.help != "==SUPPRESS=="), option


def test_a_parser_change_shows_up_as_drift(monkeypatch):
    generator = _generator()
    before = generator.render()
    original = cli.build_parser

    def changed():
        parser = original()
        verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        verbs.choices["fetch"].add_argument("--new-option", help="an option the docs do not know yet")
        return parser

    monkeypatch.setattr(cli, "build_parser", changed)
    after = generator.render()
    assert after != before and "`--new-option NEW_OPTION`" in after and "--new-option" not in before
