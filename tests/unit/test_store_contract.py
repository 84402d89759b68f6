"""The store contract (tests/support/contract.py) on a local folder store, ``file://``."""

from __future__ import annotations

import pytest

from support.contract import FolderStoreContract, StoreContract, StoreUnderTest


@pytest.fixture
def store(tmp_path) -> StoreUnderTest:
    root = tmp_path / "store"
    root.mkdir()

    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return StoreUnderTest("file", f"file://{root}", put)


class TestFileStore(StoreContract, FolderStoreContract):
    pass
