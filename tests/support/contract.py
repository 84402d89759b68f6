"""The store contract: what every model store behaves like, written once, run on each store.

``tests/unit/test_store_contract.py`` runs it on ``file://``, ``tests/integration/test_store_contract_az_s3_oci.py`` on
``az://`` (Azurite), ``s3://`` (moto) and ``oci://`` (the testbed registry). A test module subclasses
:class:`StoreContract` (and :class:`FolderStoreContract` for stores that keep versions as folders) and provides a
``store`` fixture returning a :class:`StoreUnderTest`. Only the public API is used (``modelship.publish``,
``resolve``, ``lock``, ``fetch``), so the suite holds whatever the internals become.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import modelship
from modelship.errors import ModelshipError

from .models import make_model
from .trees import leftovers, snapshot, tree_sha

PENDING_MARKER = ".modelship-publishing"  # README: what an interrupted publish leaves in the version folder


@dataclass
class StoreUnderTest:
    """A store for one test: ``root`` is a URI prefix nothing else uses; ``put`` writes one object under it with
    the store's own client (not modelship), for states only another process's publish would leave."""

    name: str
    root: str
    put: Callable[[str, bytes], None] | None = None

    def uri(self, model: str = "") -> str:
        return f"{self.root}/{model or 'm-' + uuid.uuid4().hex[:8]}"


def _model(tmp_path: Path, version: str, **extra: bytes | int) -> Path:
    """A small model whose bytes differ per version: a weight file, a nested config, an empty file."""
    seed = sum(map(ord, version))
    files: dict[str, bytes | int] = {"w.bin": 3000 + seed, "sub/cfg.json": f'{{"v": "{version}"}}'.encode()}
    files.update(extra)
    return make_model(tmp_path / f"src-{version}-{uuid.uuid4().hex[:6]}", files, seed=seed)


class StoreContract:
    """Store-independent behaviour of resolve, lock and fetch."""

    def test_latest_is_the_highest_pep440_version_not_the_newest_or_the_lexically_last(self, store, tmp_path):
        uri = store.uri()
        models = {v: _model(tmp_path, v) for v in ("1.2.0", "1.10.0", "1.9.0")}
        for v, src in models.items():  # published in this order: 1.9.0 is the newest, "1.9.0" > "1.10.0"
            modelship.publish(src, uri, version=v, progress=False)
        assert modelship.resolve(uri).version == "1.10.0"
        got = modelship.fetch(uri, tmp_path / "dest", progress=False)
        assert got.version == "1.10.0" and tree_sha(tmp_path / "dest") == tree_sha(models["1.10.0"])
        assert modelship.resolve(uri, version="1.2.0").version == "1.2.0"

    def test_a_prerelease_is_latest_only_when_asked_for(self, store, tmp_path):
        uri = store.uri()
        for v in ("1.0.0", "2.0.0rc1"):
            modelship.publish(_model(tmp_path, v), uri, version=v, progress=False)
        assert modelship.resolve(uri).version == "1.0.0"
        assert modelship.resolve(uri, pre=True).version == "2.0.0rc1"

    def test_a_missing_version_is_refused_naming_what_is_there(self, store, tmp_path):
        uri = store.uri()
        modelship.publish(_model(tmp_path, "1.0.0"), uri, version="1.0.0", progress=False)
        with pytest.raises(ModelshipError) as info:
            modelship.resolve(uri, version="9.9.9")
        assert "9.9.9" in str(info.value) and "1.0.0" in str(info.value)

    def test_a_lock_pins_exactly_what_it_resolved_after_a_newer_version_appears(self, store, tmp_path):
        uri = store.uri()
        old = _model(tmp_path, "1.0.0")
        modelship.publish(old, uri, version="1.0.0", progress=False)
        lock = modelship.lock(uri, output=tmp_path / "modelship.lock", progress=False)
        assert lock.version == "1.0.0"
        assert {f.path: f.sha256 for f in lock.files} == tree_sha(old)
        modelship.publish(_model(tmp_path, "1.1.0"), uri, version="1.1.0", progress=False)
        got = modelship.fetch(None, tmp_path / "pinned", lock=tmp_path / "modelship.lock", progress=False)
        assert got.version == "1.0.0" and tree_sha(tmp_path / "pinned") == tree_sha(old)
        assert modelship.fetch(uri, tmp_path / "latest", progress=False).version == "1.1.0"

    def test_a_file_changed_since_the_lock_is_refused_and_dest_is_untouched(self, store, tmp_path):
        uri = store.uri()
        modelship.publish(_model(tmp_path, "1.0.0"), uri, version="1.0.0", progress=False)
        lock = tmp_path / "modelship.lock"
        modelship.lock(uri, output=lock, progress=False)
        dest = tmp_path / "dest"
        modelship.fetch(uri, dest, progress=False)
        before = snapshot(dest)
        changed = _model(tmp_path, "1.0.0", **{"w.bin": b"other bytes under the same version"})
        modelship.publish(changed, uri, version="1.0.0", force=True, progress=False)
        with pytest.raises(ModelshipError, match=r"(?i)lock"):
            modelship.fetch(uri, dest, lock=lock, progress=False)
        assert snapshot(dest) == before and leftovers(tmp_path) == []

    def test_fetch_replaces_dest_whole_and_a_failed_fetch_leaves_it_as_it_was(self, store, tmp_path):
        uri = store.uri()
        v1 = _model(tmp_path, "1.0.0", **{"only-in-1.txt": b"gone in 2.0.0"})
        v2 = _model(tmp_path, "2.0.0", **{"only-in-2.txt": b"new in 2.0.0"})
        modelship.publish(v1, uri, version="1.0.0", progress=False)
        modelship.publish(v2, uri, version="2.0.0", progress=False)
        dest = tmp_path / "out" / "model"
        dest.parent.mkdir()
        assert modelship.fetch(uri, dest, version="1.0.0", progress=False).version == "1.0.0"
        assert tree_sha(dest) == tree_sha(v1)
        assert modelship.fetch(uri, dest, progress=False).version == "2.0.0"
        assert tree_sha(dest) == tree_sha(v2)  # exactly 2.0.0's files: nothing of 1.0.0 is left over
        before = snapshot(dest)
        with pytest.raises(ModelshipError):
            modelship.fetch(uri, dest, version="3.0.0", progress=False)
        assert snapshot(dest) == before
        assert leftovers(tmp_path / "out") == [] and sorted(p.name for p in dest.parent.iterdir()) == ["model"]

    def test_other_content_under_a_published_version_is_refused_without_force(self, store, tmp_path):
        """A published version never changes under its readers: only ``force`` replaces it."""
        uri = store.uri()
        src = _model(tmp_path, "1.0.0")
        modelship.publish(src, uri, version="1.0.0", progress=False)
        first = modelship.resolve(uri)
        with pytest.raises(ModelshipError, match="already"):
            modelship.publish(_model(tmp_path, "1.0.0", **{"w.bin": b"other"}), uri, version="1.0.0", progress=False)
        again = modelship.resolve(uri)
        assert [(f.path, f.size, f.sha256) for f in again.files] == [(f.path, f.size, f.sha256) for f in first.files]
        modelship.fetch(uri, tmp_path / "dest", progress=False)
        assert tree_sha(tmp_path / "dest") == tree_sha(src)

    def test_signed_versions_verify_and_a_strangers_newer_one_is_skipped_for_latest(self, store, tmp_path):
        from modelship.errors import SignatureError

        from .oms import keypair, reference_verify

        team, team_pub = keypair(tmp_path, "team")
        stranger, _ = keypair(tmp_path, "stranger")
        uri = store.uri()
        good = _model(tmp_path, "1.0.0")
        modelship.publish(good, uri, version="1.0.0", sign_key=team, progress=False)
        modelship.publish(_model(tmp_path, "2.0.0"), uri, version="2.0.0", sign_key=stranger, progress=False)
        got = modelship.fetch(uri, tmp_path / "dest", verify_keys=[team_pub], progress=False)
        assert got.version == "1.0.0" and [(s.version, s.reason) for s in got.skipped] == [("2.0.0", "unknown key")]
        assert reference_verify(tmp_path / "dest" / "model.sig", team_pub, tmp_path / "dest").returncode == 0
        before = snapshot(tmp_path / "dest")
        with pytest.raises(SignatureError):
            modelship.fetch(uri, tmp_path / "dest", version="2.0.0", verify_keys=[team_pub], progress=False)
        assert snapshot(tmp_path / "dest") == before  # refused: nothing installed


class FolderStoreContract:
    """Stores that keep a version as a folder of objects, which a publish fills one by one (not ``oci://``,
    where a tag appears only once its image is complete)."""

    def test_a_version_being_published_is_never_picked(self, store, tmp_path):
        uri = store.uri()
        modelship.publish(_model(tmp_path, "1.0.0"), uri, version="1.0.0", progress=False)
        name = uri.removeprefix(store.root + "/")
        store.put(f"{name}/3.0.0/{PENDING_MARKER}", b"")  # another process's publish of 3.0.0, half-way
        store.put(f"{name}/3.0.0/w.bin", b"half of a model")
        assert modelship.resolve(uri).version == "1.0.0"
        assert modelship.fetch(uri, tmp_path / "dest", progress=False).version == "1.0.0"
        with pytest.raises(ModelshipError, match="incomplete"):
            modelship.resolve(uri, version="3.0.0")
        with pytest.raises(ModelshipError, match="incomplete"):
            modelship.fetch(uri, tmp_path / "dest", version="3.0.0", progress=False)
