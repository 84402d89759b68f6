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


def test_every_doc_block_runs_or_says_why():
    from support import docblocks as db

    found = [b for p in db.doc_files() for b in db.blocks(p)]
    skipped = {b.where.split(":")[0]: [] for b in found if b.skip is not None}
    for b in found:
        if b.skip is not None:
            assert b.skip, f"{b.where}: a skipped block says why"
            skipped[b.where.split(":")[0]].append(b.skip)
    # the blocks that do not run, each with its reason (tests/integration/test_doc_blocks.py runs the others)
    print("\n".join(f"not run: {where}: {reasons}" for where, reasons in skipped.items()))
    assert {k: len(v) for k, v in skipped.items()} == {"README.md": 1, "examples/flask_app/README.md": 3}
    runnable = {b.where.split(":")[0] for b in found if b.skip is None}
    assert {"README.md", "docs/model-image.md", "examples/flask_app/README.md"} <= runnable


def test_the_substitution_table_maps_every_placeholder_to_the_testbed():
    from support import docblocks as db

    text = "\n".join(b.text for p in db.doc_files() for b in db.blocks(p) if b.skip is None)
    done = db.substitute(text, container="c1", registry="127.0.0.1:5000", run="r1")
    assert "myacr.azurecr.io" not in done and "myaccount" not in done and "<digest>" not in done
    assert "oci://127.0.0.1:5000/r1/models/iris" in done and "az://devstoreaccount1/c1/models/iris" in done
