"""The ``bash`` blocks of README.md and docs/*.md (and the example's README), to be run as written.

A block that is not meant to run carries, on the line right above its fence, the marker
``<!-- docs-test: skip (REASON) -->``; the tests honour it and list every skipped block with its reason.

Placeholders of the docs and what they become on the testbed (the whole table: each is a plain text
replacement, longest first, applied to the block before it runs):

    ======================================  ==============================================================
    in the docs                             on the testbed
    ======================================  ==============================================================
    ``az://myaccount/models``               ``az://devstoreaccount1/<fresh container>/models`` (Azurite)
    ``az://devstoreaccount1/models``        the same fresh container (the example's README names Azurite)
    ``oci://myacr.azurecr.io/``             ``oci://<testbed registry>/<run>/``
    ``myacr.azurecr.io/``                   ``<testbed registry>/<run>/``
    ======================================  ==============================================================

Each file's blocks run in order, in one folder and one ``bash -euo pipefail`` (variables carry over, as when a
reader pastes them into one terminal): README.md and docs/ in a folder
holding ``model/`` (a trained model, ``examples/flask_app/train.py``) and ``app/`` (the example app without
its tests); the example's README in a copy of ``examples/flask_app`` two levels below links to the
virtualenv and the testbed, as in the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import ROOT

SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")
FENCE = re.compile(r"^```bash\s*\n(?P<body>.*?)^```\s*$", re.S | re.M)


def doc_files() -> list[Path]:
    """The files whose bash blocks run: README.md, docs/*.md, examples/flask_app/README.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "flask_app" / "README.md"]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None  # the reason, for a block marked not to run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.search(before)
        out.append(Block(path, line, m.group("body"), marker.group("reason").strip() if marker else None))
    return out


def substitute(text: str, *, container: str, registry: str, run: str) -> str:
    """The table of the module docstring, applied longest placeholder first."""
    table = {
        "az://myaccount/models": f"az://devstoreaccount1/{container}/models",
        "az://devstoreaccount1/models": f"az://devstoreaccount1/{container}/models",
        "oci://myacr.azurecr.io/": f"oci://{registry}/{run}/",
        "myacr.azurecr.io/": f"{registry}/{run}/",
    }
    for placeholder in sorted(table, key=len, reverse=True):
        text = text.replace(placeholder, table[placeholder])
    return text
