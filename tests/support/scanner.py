"""A secret scanner: looks for credentials, whole or in pieces, in every form they could be written."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

WINDOW = 16  # any run of this many characters of a secret counts as a leak


@dataclass
class Scanner:
    """Looks for secrets -- whole, or any ``WINDOW``-character piece -- in every form they could be written:
    raw, URL-quoted, JSON-escaped and base64 (at each of the three byte alignments)."""

    secrets: dict[str, str]
    rows: dict[str, dict] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.needles: dict[bytes, str] = {}
        for name, value in self.secrets.items():
            for form in self._forms(value):
                data = form.encode()
                for i in range(max(1, len(data) - WINDOW + 1)):
                    self.needles.setdefault(data[i : i + WINDOW], name)

    @staticmethod
    def _forms(value: str) -> set[str]:
        forms = {value, quote(value, safe=""), quote(value, safe="/"), json.dumps(value)[1:-1]}
        for pad in range(3):
            b64 = base64.b64encode(b"\0" * pad + value.encode()).decode()
            start = 4 if pad else 0  # the first quad mixes in the padding bytes
            forms.add(b64[start:].rstrip("="))
        return {f for f in forms if len(f) >= 8}

    def _row(self, what: str) -> dict:
        return self.rows.setdefault(what, {"what": what, "items": 0, "scanned": 0, "found": 0})

    def text(self, what: str, text: str | bytes, where: str = "") -> None:
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        row = self._row(what)
        row["items"] += 1
        row["scanned"] += len(data)
        for needle, name in self.needles.items():
            if needle in data:
                row["found"] += 1
                self.hits.append(f"{name} in {what} {where}: ...{_context(data, needle)}...")
                break

    def file(self, what: str, path: Path) -> None:
        """A large file, searched by grep's multi-pattern matcher (Aho-Corasick) in one pass."""
        row = self._row(what)
        row["items"] += 1
        row["scanned"] += path.stat().st_size
        patterns = path.with_name(f".needles-{uuid.uuid4().hex[:8]}")
        patterns.write_bytes(b"\n".join(self.needles))
        try:
            proc = subprocess.run(
                ["grep", "-a", "-F", "-o", "-b", "-m", "5", "-f", str(patterns), str(path)],
                capture_output=True,
                timeout=600,
            )
        finally:
            patterns.unlink()
        assert proc.returncode in (0, 1), proc.stderr.decode()[-500:]
        if proc.returncode == 0:
            row["found"] += 1
            for line in proc.stdout.splitlines()[:5]:
                offset, _, needle = line.partition(b":")
                self.hits.append(f"{self.needles.get(needle, '?')} in {what} {path.name} at byte {offset.decode()}")

    def counts(self) -> list[dict]:
        return [
            {"what": f"{r['what']} ({r['items']} items, bytes)", "scanned": r["scanned"], "found": r["found"]}
            for r in self.rows.values()
        ]


def _context(data: bytes, needle: bytes) -> str:
    i = data.find(needle)
    return data[max(0, i - 40) : i + len(needle) + 20].decode("utf-8", "replace")
