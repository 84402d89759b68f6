"""publish / resolve / lock / fetch against real Azurite."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import pytest
from azure.storage.blob import ContentSettings

import modelship
import modelship.hookspecs
from modelship import cli
from modelship.cache import Cache
from modelship.errors import AuthError, IntegrityError, ModelshipError, NotFoundError
from modelship.repos.folder_publish import PENDING_MARKER
from modelship.stores.base import SHA256_KEY
from support.azurite import container_sas
from support.models import make_model
from support.trees import leftovers, snapshot, tree_sha

pytestmark = pytest.mark.usefixtures("azure_env")


def uri_of(container, prefix: str = "iris") -> str:
    return f"az://devstoreaccount1/{container.container_name}/{prefix}"


def test_publish_then_fetch_latest_round_trips_nested_files(tmp_path, blob_container):
    src = make_model(tmp_path / "m", {"model.onnx": 5000, "cfg/labels.json": b'["a","b"]', "empty.txt": b""})
    uri = uri_of(blob_container)
    modelship.publish(src, uri, version="1.0.0")
    result = modelship.fetch(uri, tmp_path / "out")
    assert result.version == "1.0.0"
    assert tree_sha(tmp_path / "out") == tree_sha(src)
    manifest = json.loads((tmp_path / "out" / "modelship.json").read_text())
    assert manifest["uri"] == uri and manifest["version"] == "1.0.0"
    assert {f["path"] for f in manifest["files"]} == {"model.onnx", "cfg/labels.json", "empty.txt"}
    assert leftovers(tmp_path) == []


def test_publish_sets_sha256_metadata_and_content_md5_even_for_chunked_uploads(tmp_path, blob_container):
    # 20 MB is above max_single_put_size (16 MB): uploaded as blocks, committed with Put Block List.
    src = make_model(tmp_path / "m", {"big.bin": 20 * 1024 * 1024})
    modelship.publish(src, uri_of(blob_container), version="1")
    data = (src / "big.bin").read_bytes()
    props = blob_container.get_blob_client("iris/1/big.bin").get_blob_properties()
    assert props.metadata[SHA256_KEY] == hashlib.sha256(data).hexdigest()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()
    names = {b.name for b in blob_container.list_blobs()}
    assert "iris/1/modelship.json" in names and f"iris/1/{PENDING_MARKER}" not in names


def test_publish_refuses_to_overwrite_without_force(tmp_path, blob_container, capsys):
    src = make_model(tmp_path / "m", {"w": 10})
    uri = uri_of(blob_container)
    assert cli.main(["publish", str(src), uri, "--version", "1.0"]) == 0
    assert cli.main(["publish", str(src), uri, "--version", "1.0"]) == 1
    assert "already exists" in capsys.readouterr().err
    make_model(src, {"w": 20}, seed=1)
    assert cli.main(["publish", str(src), uri, "--version", "1.0", "--force"]) == 0
    assert blob_container.get_blob_client("iris/1.0/w").get_blob_properties().size == 20


def _publish_versions(tmp_path, container, versions):
    for i, v in enumerate(versions):
        modelship.publish(make_model(tmp_path / f"m{i}", {"w": 8 + i}, seed=i), uri_of(container), version=v)


@pytest.mark.parametrize(
    ("versions", "latest", "pre_latest"),
    [
        (["1.9.0", "1.10.0", "1.2.0"], "1.10.0", "1.10.0"),
        (["1.0.0", "2.0.0rc1"], "1.0.0", "2.0.0rc1"),
        (["2.0.0rc1", "2.0.0b2"], "2.0.0rc1", "2.0.0rc1"),  # only pre-releases: the highest of them
        (["v1", "v2.0.1", "0.9"], "v2.0.1", "v2.0.1"),  # v-prefixed names are valid PEP 440
    ],
)
def test_latest_is_highest_pep440_version(tmp_path, blob_container, versions, latest, pre_latest):
    _publish_versions(tmp_path, blob_container, versions)
    assert modelship.resolve(uri_of(blob_container)).version == latest
    assert modelship.resolve(uri_of(blob_container), pre=True).version == pre_latest


def test_non_pep440_names_pick_newest_last_modified(tmp_path, blob_container):
    _publish_versions(tmp_path, blob_container, ["zeta-run"])
    time.sleep(1.1)  # blob Last-Modified has one-second resolution
    _publish_versions(tmp_path / "2", blob_container, ["alpha-run"])
    assert modelship.resolve(uri_of(blob_container)).version == "alpha-run"


def test_incomplete_version_is_never_latest_but_foreign_uploads_are_used(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    # A publish that died half-way: marker present, manifest missing.
    blob_container.upload_blob(f"iris/3.0.0/{PENDING_MARKER}", b"{}")
    blob_container.upload_blob("iris/3.0.0/w", b"partial")
    # Another tool's upload (azcopy, the portal): no markers at all.
    blob_container.upload_blob("iris/2.0.0/w", b"by azcopy")
    res = modelship.resolve(uri_of(blob_container))
    assert res.version == "2.0.0"
    assert res.files[0].sha256 is None and res.files[0].md5  # verified by Content-MD5 instead
    assert cli.main(["fetch", uri_of(blob_container), str(tmp_path / "o"), "--version", "3.0.0"]) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and err.count("\n") == 1


def test_pinned_version_and_json_output(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0", "1.1.0"])
    assert cli.main(["resolve", uri_of(blob_container), "--version", "1.0.0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "1.0.0" and out["files"][0]["size"] == 8 and out["files"][0]["etag"]
    assert cli.main(["fetch", uri_of(blob_container), str(tmp_path / "o"), "--version", "1.0.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1.0.0"


def test_unversioned_prefix_is_one_model(tmp_path, blob_container):
    blob_container.upload_blob("flat/model.bin", b"x" * 100)
    blob_container.upload_blob("flat/sub/labels.json", b"[]")
    res = modelship.resolve(uri_of(blob_container, "flat"))
    assert res.version is None and {f.path for f in res.files} == {"model.bin", "sub/labels.json"}
    result = modelship.fetch(uri_of(blob_container, "flat"), tmp_path / "o")
    assert (tmp_path / "o" / "sub" / "labels.json").read_bytes() == b"[]"
    assert result.manifest.files[0].sha256


def test_refetch_of_unchanged_version_downloads_nothing(tmp_path, blob_container):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    first = modelship.fetch(uri_of(blob_container), tmp_path / "a")
    assert first.downloaded_files == 1
    again = modelship.fetch(uri_of(blob_container), tmp_path / "a")
    assert again.unchanged and again.downloaded_bytes == 0
    other = modelship.fetch(uri_of(blob_container), tmp_path / "b")  # new DEST, same bytes: from the cache
    assert other.downloaded_files == 0 and other.cached_files == 1
    assert (tmp_path / "b" / "w").stat().st_ino == (tmp_path / "a" / "w").stat().st_ino  # hard-linked


def test_foreign_upload_cached_by_etag(tmp_path, blob_container):
    blob_container.upload_blob("flat/model.bin", b"y" * 1000)
    assert modelship.fetch(uri_of(blob_container, "flat"), tmp_path / "a").downloaded_files == 1
    assert modelship.fetch(uri_of(blob_container, "flat"), tmp_path / "b").downloaded_files == 0


def test_newer_version_replaces_dest_atomically(tmp_path, blob_container):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    modelship.fetch(uri_of(blob_container), tmp_path / "o")
    modelship.publish(make_model(tmp_path / "n", {"other": 5}), uri_of(blob_container), version="1.1.0")
    assert modelship.fetch(uri_of(blob_container), tmp_path / "o").version == "1.1.0"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["modelship.json", "other"]
    assert leftovers(tmp_path) == []


def test_large_model_streams_in_ranges(tmp_path, blob_container):
    # 200 MB+ in one blob: ranged parallel download, hashed in order, verified.
    src = make_model(tmp_path / "m", {"weights.bin": 210 * 1024 * 1024, "small.json": b"{}"})
    modelship.publish(src, uri_of(blob_container), version="1")
    result = modelship.fetch(uri_of(blob_container), tmp_path / "o", workers=8)
    assert result.downloaded_bytes == 210 * 1024 * 1024 + 2
    assert tree_sha(tmp_path / "o") == tree_sha(src)


def test_lock_then_fetch_exact_and_lock_mismatch(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    lock_file = tmp_path / "modelship.lock"
    assert cli.main(["lock", uri_of(blob_container), "-o", str(lock_file)]) == 0
    _publish_versions(tmp_path / "later", blob_container, ["0.1", "2.0.0"])  # a newer latest appears
    assert cli.main(["fetch", "--lock", str(lock_file), str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "modelship.json").read_text())["version"] == "1.0.0"
    # Someone replaces the pinned version's bytes (with fresh, self-consistent metadata).
    modelship.publish(
        make_model(tmp_path / "evil", {"w": 8}, seed=99), uri_of(blob_container), version="1.0.0", force=True
    )
    capsys.readouterr()
    assert cli.main(["fetch", "--lock", str(lock_file), str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "lock mismatch: w has sha256" in err
    assert not (tmp_path / "o2").exists()


def test_hand_edited_lock_is_refused(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    lock_file = tmp_path / "modelship.lock"
    modelship.lock(uri_of(blob_container), output=lock_file)
    doc = json.loads(lock_file.read_text())
    doc["files"][0]["sha256"] = "0" * 64
    lock_file.write_text(json.dumps(doc))
    assert cli.main(["fetch", "--lock", str(lock_file), str(tmp_path / "o")]) == 2
    assert "edited by hand" in capsys.readouterr().err
    lock_file.write_text("{not json")
    assert cli.main(["fetch", "--lock", str(lock_file), str(tmp_path / "o")]) == 2


def test_corrupted_blob_is_an_error_and_dest_untouched(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    modelship.fetch(uri_of(blob_container), tmp_path / "o", version="1.0.0")
    before = snapshot(tmp_path / "o")
    modelship.publish(make_model(tmp_path / "m2", {"w": 4096}, seed=5), uri_of(blob_container), version="1.1.0")
    blob = blob_container.get_blob_client("iris/1.1.0/w")
    meta = blob.get_blob_properties().metadata
    # Same size, other bytes, sha256 metadata left as it was: bit rot or a careless overwrite.
    blob.upload_blob(b"\0" * 4096, overwrite=True, metadata=meta)
    assert cli.main(["fetch", uri_of(blob_container), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "/1.1.0/w" in err and err.count("\n") == 1
    assert snapshot(tmp_path / "o") == before
    assert leftovers(tmp_path) == []
    cache = Cache()
    for p in (cache.root / "sha256").rglob("*"):
        if p.is_file():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name  # nothing wrong was cached


def test_foreign_blob_with_wrong_content_md5_is_rejected(tmp_path, blob_container):
    blob = blob_container.upload_blob("flat/w", b"abc")
    # Azurite checks Content-MD5 on upload, so set a wrong one afterwards (Set Blob Properties stores it as is).
    blob.set_http_headers(ContentSettings(content_md5=bytearray(hashlib.md5(b"xyz").digest())))
    with pytest.raises(IntegrityError, match="Content-MD5 mismatch"):
        modelship.fetch(uri_of(blob_container, "flat"), tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("uri_tail", "message"),
    [
        ("/no-such-container-x/iris", "container 'no-such-container-x' of account 'devstoreaccount1' not found"),
        ("/{c}/nothing-here", "nothing is stored under that prefix"),
    ],
)
def test_missing_container_or_prefix_is_one_line(tmp_path, blob_container, capsys, uri_tail, message):
    uri = "az://devstoreaccount1" + uri_tail.format(c=blob_container.container_name)
    assert cli.main(["fetch", uri, str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_version_lists_available(tmp_path, blob_container, capsys):
    _publish_versions(tmp_path, blob_container, ["1.0.0", "1.1.0"])
    assert cli.main(["fetch", uri_of(blob_container), str(tmp_path / "o"), "--version", "9"]) == 1
    assert "version '9' not found" in capsys.readouterr().err


def test_wrong_key_is_auth_error_without_the_key(
    tmp_path, blob_container, monkeypatch, azurite_connection_string, capsys
):
    fake_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk9PQ=="
    bad = azurite_connection_string.replace(azurite_connection_string.split("AccountKey=")[1].split(";")[0], fake_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", bad)
    with pytest.raises(AuthError):
        modelship.resolve(uri_of(blob_container))
    assert cli.main(["fetch", "-vv", uri_of(blob_container), str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "denied" in captured.err
    assert fake_key not in captured.err + captured.out
    assert fake_key[:12] not in captured.err


def test_sas_token_from_connection_string(tmp_path, blob_container, monkeypatch, testbed):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    key = testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"].split("AccountKey=")[1].split(";")[0]
    sas = generate_container_sas(
        "devstoreaccount1",
        blob_container.container_name,
        account_key=key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
    )
    port = testbed["MODELSHIP_TESTBED_AZURITE_PORT"]
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;SharedAccessSignature={sas}",
    )
    assert modelship.fetch(uri_of(blob_container), tmp_path / "o").version == "1.0.0"
    # The same SAS given as AZURE_STORAGE_SAS_TOKEN, the endpoint from MODELSHIP_AZURE_ENDPOINT.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    monkeypatch.setenv("MODELSHIP_AZURE_ENDPOINT", f"http://127.0.0.1:{port}/devstoreaccount1")
    assert modelship.resolve(uri_of(blob_container)).version == "1.0.0"
    # Read-only SAS: publishing is denied, with a one-line auth error that does not echo the SAS.
    with pytest.raises(AuthError) as e:
        modelship.publish(make_model(tmp_path / "x", {"w": 3}), uri_of(blob_container), version="2")
    assert sas.split("sig=")[1][:10] not in str(e.value)


def test_dest_that_is_not_a_modelship_folder_is_refused(tmp_path, blob_container):
    _publish_versions(tmp_path, blob_container, ["1.0.0"])
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("mine")
    with pytest.raises(ModelshipError, match="not empty"):
        modelship.fetch(uri_of(blob_container), tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "mine"


def test_empty_version_folder_is_not_found(tmp_path, blob_container):
    blob_container.upload_blob("iris/1.0/modelship.json", json.dumps({"files": []}).encode())
    with pytest.raises(NotFoundError, match="holds no model files"):
        modelship.fetch(uri_of(blob_container), tmp_path / "o")


class _OverwriteWhileReading:
    """A source plugin (registered through modelship's real pluggy hook) that wraps the Azure source and,
    after the first bytes of a read, really overwrites that blob in Azurite: a blob replaced mid-download."""

    def __init__(self, container, times: int):
        self.container, self.times = container, times

    @modelship.hookspecs.hookimpl(tryfirst=True)
    def modelship_open_source(self, uri, credential):
        from modelship.stores.azure_blob import AzureBlobSource

        plugin, inner = self, AzureBlobSource(uri, credential)

        class Wrapped:
            def __init__(self):
                self.uri = uri

            def __getattr__(self, name):
                return getattr(inner, name)

            def read(self, name, offset, length, etag):
                for i, chunk in enumerate(inner.read(name, offset, length, etag)):
                    yield chunk
                    if i == 0 and offset == 0 and plugin.times > 0 and not name.endswith("modelship.json"):
                        plugin.times -= 1
                        blob = plugin.container.get_blob_client(name)
                        blob.upload_blob(b"\1" * blob.get_blob_properties().size, overwrite=True)

        return Wrapped()


@pytest.fixture
def overwrite_plugin(blob_container):
    from modelship.stores import plugin_manager

    def register(times: int):
        plugin = _OverwriteWhileReading(blob_container, times)
        plugin_manager().register(plugin, name="test-overwrite")
        return plugin

    yield register
    plugin_manager().unregister(name="test-overwrite")


def test_blob_replaced_mid_download_fails_clearly(tmp_path, blob_container, overwrite_plugin, capsys):
    blob_container.upload_blob("flat/model.bin", b"a" * (20 * 1024 * 1024))  # several ranges
    overwrite_plugin(times=10)  # replaced on every attempt
    assert cli.main(["fetch", uri_of(blob_container, "flat"), str(tmp_path / "o"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "changed while it was being read" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_blob_replaced_once_restarts_and_gets_the_new_bytes(tmp_path, blob_container, overwrite_plugin):
    blob_container.upload_blob("flat/model.bin", b"a" * (20 * 1024 * 1024))
    overwrite_plugin(times=1)
    result = modelship.fetch(uri_of(blob_container, "flat"), tmp_path / "o", workers=1)
    assert (tmp_path / "o" / "model.bin").read_bytes() == b"\1" * (20 * 1024 * 1024)
    assert result.manifest.files[0].sha256 == hashlib.sha256(b"\1" * (20 * 1024 * 1024)).hexdigest()


def test_published_blob_replaced_mid_download_is_caught_by_its_manifest(tmp_path, blob_container, overwrite_plugin):
    modelship.publish(make_model(tmp_path / "m", {"w": 9 * 1024 * 1024}), uri_of(blob_container), version="1")
    overwrite_plugin(times=1)
    with pytest.raises(IntegrityError, match=r"the file was replaced|sha256"):
        modelship.fetch(uri_of(blob_container), tmp_path / "o", workers=1)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("permission", ["racwl", "cw"])
def test_publish_with_a_container_sas(tmp_path, blob_container, monkeypatch, testbed, capsys, caplog, permission):
    """A SAS scoped to one existing container, without the rights to create containers (or, for cw, to list,
    read or delete): publishing needs only the writes. Without delete the marker stays; the manifest marks the
    version complete all the same. Without list, publish says it could not check that the version is new."""
    model = make_model(tmp_path / "m", {"w.bin": 3000, "sub/cfg.json": b"{}"})
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", container_sas(testbed, blob_container.container_name, permission)
    )
    assert cli.main(["publish", str(model), uri_of(blob_container), "--version", "1.0.0", "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err
    assert ("cannot list" in caplog.text) == (permission == "cw"), caplog.text
    names = {b.name for b in blob_container.list_blobs()}
    assert {"iris/1.0.0/w.bin", "iris/1.0.0/sub/cfg.json", "iris/1.0.0/modelship.json"} <= names
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"])
    got = modelship.fetch(uri_of(blob_container), tmp_path / "o", progress=False)
    assert got.version == "1.0.0" and tree_sha(tmp_path / "o") == tree_sha(model)


def test_publish_into_a_missing_container_says_so(tmp_path, blob_service, monkeypatch, testbed, capsys):
    """A container SAS for a container that does not exist (it may not create one): one line naming it."""
    name = f"t-missing-{time.monotonic_ns()}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", container_sas(testbed, name, "racwl"))
    model = make_model(tmp_path / "m", {"w.bin": 10})
    rc = cli.main(["publish", str(model), f"az://devstoreaccount1/{name}/iris", "--version", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert (
        f"container '{name}' of account 'devstoreaccount1' does not exist, and the credential may not create it" in err
    )
    assert name not in {c.name for c in blob_service.list_containers()}


def test_publish_creates_a_missing_container_when_allowed(tmp_path, blob_service, azure_env):
    name = f"t-new-{time.monotonic_ns()}"
    model = make_model(tmp_path / "m", {"w.bin": 10})
    try:
        modelship.publish(model, f"az://devstoreaccount1/{name}/iris", version="1", progress=False)
        assert modelship.resolve(f"az://devstoreaccount1/{name}/iris").version == "1"
    finally:
        blob_service.delete_container(name)
