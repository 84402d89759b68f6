"""oci://REGISTRY/REPO[:TAG|@sha256:…] as a model store, against the real registry: resolve (PEP 440 tags,
latest, pre-releases), lock (the manifest digest and every sha256), fetch (layers verified by digest while
streaming, files out of the tar, the same cache and atomic install, a broken connection resumed), and
untrusted input: hand-made layers with '..', absolute paths, links, devices, files outside the model dir,
sizes and sha256s that lie, a blob the registry holds damaged, images that are not model images. Every
failure is one line, exit 1, and leaves neither DEST nor the cache half-written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from modelship import fetch, lock, resolve
from modelship.cache import Cache
from modelship.errors import IntegrityError, ModelshipError, NotFoundError, UsageError
from modelship.oci.modelimage import publish_image
from support.cli import command, run_cli
from support.faults import Fault, FaultProxy, first
from support.faults.checks import cache_problems
from support.modelimage import (
    dir_member,
    file_member,
    model_files,
    push_model_image,
    tar_layer,
    tree_sha256s,
    unique_repo,
)
from support.oci import build_app_image, push_image, registry_process
from support.trees import leftovers

KiB = 1024
BASE = "opt/modelship/model"


def _publish(root: Path, uri: str, version: str, *, big_kb: int = 600, **kw) -> object:
    """A small model with one layer of its own (large_file lowered, so tests stay fast)."""
    model_files(root / version, version, big_mb=1, seed=str(big_kb).encode())
    return publish_image(root / version, uri, version=version, large_file=512 * KiB, quiet=True, **kw)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, registry):
    """A repository with several versions, a pre-release, and tags that are not versions."""
    root = tmp_path_factory.mktemp("models")
    os.environ.setdefault("MODELSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    repo = unique_repo("ms/versions")
    uri = f"oci://{registry}/{repo}"
    published = {v: _publish(root, uri, v) for v in ("1.0.0", "1.2.0", "1.10.0", "2.0.0rc1")}
    from support.modelimage import push_manifest
    from support.oci import manifest

    _, m, media_type = manifest(registry, repo, "1.0.0")
    push_manifest(registry, repo, "latest", m, media_type)  # "latest" and "stable" are not PEP 440 versions
    push_manifest(registry, repo, "stable", m, media_type)
    return uri, published, root


def test_latest_is_the_highest_pep440_tag_and_pins_are_honoured(versions):
    uri, published, _ = versions
    res = resolve(uri)
    assert res.version == "1.10.0" and res.pin == published["1.10.0"].image_digest  # not "latest", not 1.2.0
    assert {f.path for f in res.files} == {"weights.bin", "config.json", "tok/vocab.txt"}
    assert all(f.sha256 for f in res.files)
    assert resolve(uri, pre=True).version == "2.0.0rc1"
    assert resolve(uri, version="1.2.0").pin == published["1.2.0"].image_digest
    assert resolve(uri + ":1.0.0").version == "1.0.0"
    by_digest = resolve(f"{uri}@{published['1.2.0'].image_digest}")
    assert by_digest.version == "1.2.0" and by_digest.pin == published["1.2.0"].image_digest
    proc = run_cli("resolve", uri, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["model_digest"] == published["1.10.0"].manifest.digest


def test_lock_pins_the_manifest_digest_and_fetch_installs_exactly_that(versions, tmp_path):
    uri, published, root = versions
    lk = lock(uri, output=tmp_path / "modelship.lock")
    doc = json.loads((tmp_path / "modelship.lock").read_text())
    assert doc["pin"] == published["1.10.0"].image_digest and doc["version"] == "1.10.0"
    assert {f["path"]: f["sha256"] for f in doc["files"]} == tree_sha256s(root / "1.10.0")
    # the pipeline's line: URI and lock both given
    proc = run_cli("fetch", uri, str(tmp_path / "dest"), "--lock", str(tmp_path / "modelship.lock"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == "1.10.0" and out["model_digest"] == lk.digest and out["downloaded_bytes"] > 0
    assert tree_sha256s(tmp_path / "dest") == tree_sha256s(root / "1.10.0")
    installed = json.loads((tmp_path / "dest" / "modelship.json").read_text())
    assert installed["uri"] == uri and installed["version"] == "1.10.0"


def test_fetch_uses_the_cache_and_skips_layers_it_holds(versions, tmp_path, monkeypatch):
    uri, published, _ = versions
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    first_fetch = fetch(uri, tmp_path / "a", version="1.2.0", progress=False)
    assert first_fetch.downloaded_bytes >= sum(s for _, s, _ in published["1.2.0"].layers)
    again = fetch(uri, tmp_path / "b", version="1.2.0", progress=False)
    assert again.downloaded_bytes == 0 and again.cached_files == 3
    assert fetch(uri, tmp_path / "b", version="1.2.0", progress=False).unchanged
    assert cache_problems(Cache(tmp_path / "cache")) == []


def test_a_moved_tag_fails_the_lock_and_leaves_dest_as_it_was(tmp_path, registry):
    uri = f"oci://{registry}/{unique_repo('ms/moved')}"
    _publish(tmp_path / "m", uri, "1.0.0")
    lock(uri, output=tmp_path / "lock")
    fetch(uri, tmp_path / "dest", lock=tmp_path / "lock", progress=False)
    before = tree_sha256s(tmp_path / "dest")
    (tmp_path / "m" / "1.0.0" / "config.json").write_text('{"v": "other"}')
    publish_image(tmp_path / "m" / "1.0.0", uri, version="1.0.0", force=True, large_file=512 * KiB, quiet=True)
    proc = run_cli("fetch", uri, str(tmp_path / "dest"), "--lock", str(tmp_path / "lock"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "lock mismatch" in proc.stderr and "now is" in proc.stderr
    assert tree_sha256s(tmp_path / "dest") == before and leftovers(tmp_path) == []


def test_a_broken_connection_resumes_where_it_was(tmp_path, registry):
    uri = f"oci://{registry}/{unique_repo('ms/resume')}"
    published = _publish(tmp_path / "m", uri, "1.0.0")
    host, port = registry.split(":")
    big = published.layers[0][0]
    cut = first(2, Fault.reset(300 * KiB), match=lambda r: r.method == "GET" and big in r.target)
    ranges: list[tuple[int, int] | None] = []

    def plan(req):
        if req.method == "GET" and big in req.target:
            ranges.append(_start(req.headers["range"]) if "range" in req.headers else (0, 0))
        return cut(req)

    with FaultProxy((host, int(port)), plan, lifetime=120) as proxy:
        via = uri.replace(registry, f"127.0.0.1:{proxy.port}")
        got = fetch(via, tmp_path / "dest", progress=False)
    assert [i.kind for i in proxy.stats.injected] == ["reset", "reset"]
    assert tree_sha256s(tmp_path / "dest") == tree_sha256s(tmp_path / "m" / "1.0.0")
    # the first GET from byte 0, each retry from where the cut left it: never from the start again
    assert ranges[0] == (0, 0) and len(ranges) == 3 and all(r[0] > 0 for r in ranges[1:]), ranges
    assert got.downloaded_bytes == sum(s for _, s, _ in published.layers)


def test_a_layer_damaged_once_on_the_way_is_read_again(tmp_path, registry, monkeypatch):
    """One flipped byte in transit (issue 19 item 10): the layer's bytes do not hash to its digest, so it is read
    again, and the fetch succeeds instead of calling the registry's copy damaged; nothing damaged is cached."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"oci://{registry}/{unique_repo('ms/flip')}"
    published = _publish(tmp_path / "m", uri, "1.0.0")
    host, port = registry.split(":")
    big, size, _ = published.layers[0]
    gets: list[str] = []

    def plan(req):
        if req.method == "GET" and big in req.target:
            gets.append(req.headers.get("range", ""))
            if len(gets) == 1:
                return Fault.flip(size // 2)  # inside the large file: its sha256 and the layer digest both fail
        return None

    with FaultProxy((host, int(port)), plan, lifetime=120) as proxy:
        got = fetch(uri.replace(registry, f"127.0.0.1:{proxy.port}"), tmp_path / "dest", progress=False)
    assert [i.kind for i in proxy.stats.injected] == ["flip"]
    assert len(gets) == 2 and gets[1] == "", gets  # read again whole: the damage may be anywhere in it
    assert tree_sha256s(tmp_path / "dest") == tree_sha256s(tmp_path / "m" / "1.0.0")
    assert got.downloaded_bytes == sum(s for _, s, _ in published.layers) + size
    cache = Cache(tmp_path / "cache")
    assert cache_problems(cache) == [] and not any((cache.root / "partial").iterdir())


def test_a_fetch_killed_half_way_resumes_where_it_was(tmp_path, registry):
    """SIGKILL in the middle of a layer (issue 19 item 10: 286 MB were downloaded again): the bytes that arrived
    are kept in the cache, and the next fetch asks the registry only for the rest of the layer."""
    env = {"MODELSHIP_CACHE_DIR": str(tmp_path / "cache")}
    uri = f"oci://{registry}/{unique_repo('ms/killed')}"
    published = _publish(tmp_path / "m", uri, "1.0.0")
    host, port = registry.split(":")
    big, size, _ = published.layers[0]
    ranges: list[str] = []

    def plan(req):
        if req.method == "GET" and big in req.target:
            ranges.append(req.headers.get("range", ""))
            if len(ranges) == 1:
                return Fault.stall(size // 2, seconds=60)  # half the layer, then nothing: the kill comes meanwhile
        return None

    partial = tmp_path / "cache" / "partial" / big.removeprefix("sha256:")
    with FaultProxy((host, int(port)), plan, lifetime=120) as proxy:
        via = uri.replace(registry, f"127.0.0.1:{proxy.port}")
        proc = subprocess.Popen(command("fetch", via, str(tmp_path / "dest")), env={**os.environ, **env})
        try:
            deadline = time.monotonic() + 60
            while not (partial.exists() and partial.stat().st_size >= size // 4):
                assert proc.poll() is None and time.monotonic() < deadline, "no bytes kept for a resume"
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait()
        # every layer that was under way keeps what had arrived (the small-files layer too, if it was)
        kept = {p.name: p.stat().st_size for p in partial.parent.iterdir()}
        again = run_cli("fetch", via, str(tmp_path / "dest"), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert kept[partial.name] >= size // 4 and ranges == ["", f"bytes={kept[partial.name]}-"], (kept, ranges)
    assert json.loads(again.stdout)["downloaded_bytes"] == sum(s for _, s, _ in published.layers) - sum(kept.values())
    assert tree_sha256s(tmp_path / "dest") == tree_sha256s(tmp_path / "m" / "1.0.0")
    assert not partial.exists() and cache_problems(Cache(tmp_path / "cache")) == []


def _start(value: str) -> tuple[int, int]:
    """``bytes=N-`` (an open range, as a resume asks for) as (N, -1)."""
    a, _, b = value.removeprefix("bytes=").partition("-")
    return int(a), int(b) if b else -1


# ---- bad references, registries, images ---------------------------------------------------------------------


def test_wrong_or_missing_tags_and_digests_are_one_line(versions, tmp_path):
    uri, _published, _ = versions
    cases = [
        (["resolve", uri, "--version", "9.9.9"], 1, "version '9.9.9' not found"),
        (["resolve", uri + "@sha256:" + "0" * 64], 1, "not found"),
        (["resolve", uri + "@sha256:abc"], 2, "bad digest"),
        (["resolve", uri + ":1.2.0", "--version", "1.0.0"], 2, "drop --version"),
        (["resolve", uri.rsplit("/", 1)[0] + "/no-such-repo"], 1, "not found"),
        (["fetch", uri, str(tmp_path / "dest"), "--version", "7.0.0"], 1, "not found"),
    ]
    for args, code, words in cases:
        proc = run_cli(*args)
        assert proc.returncode == code and words in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert "1.10.0" in run_cli("resolve", uri, "--version", "9.9.9").stderr  # names what is there
    assert not (tmp_path / "dest").exists()


def test_a_registry_that_is_down_or_denies_is_one_line(tmp_path):
    down = run_cli("resolve", "oci://127.0.0.1:9/models/x")
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "not reachable" in down.stderr, down.stderr
    import bcrypt

    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"ci:{hashed}\n")
    auth = f"auth: {{htpasswd: {{realm: test, path: {tmp_path / 'htpasswd'}}}}}\n"
    with registry_process(tmp_path / "reg", auth) as secured:
        denied = run_cli(
            "fetch", f"oci://{secured}/models/x", str(tmp_path / "dest"),
            env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")},
        )  # fmt: skip
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1, denied.stderr
    assert "wants credentials" in denied.stderr and not (tmp_path / "dest").exists()


def test_an_image_that_is_not_a_model_image_is_refused(tmp_path, registry, docker_client, base_image):
    repo = unique_repo("ms/app")
    tag = build_app_image(docker_client, base_image, f"{registry}/{repo}:1.0.0")
    try:
        push_image(docker_client, tag)
    finally:
        docker_client.images.remove(tag, force=True)
    proc = run_cli("fetch", f"oci://{registry}/{repo}", str(tmp_path / "dest"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not a model image" in proc.stderr and "modelship publish" in proc.stderr
    # a compressed layer named as a model layer: modelship reads uncompressed tar only
    files = {"w.bin": b"x" * 2000}
    layer = tar_layer([dir_member(BASE), file_member(f"{BASE}/w.bin", files["w.bin"])])
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    push_model_image(registry, repo, "2.0.0", [layer], files, layer_media_type=gz)
    with pytest.raises(ModelshipError, match="not an uncompressed tar"):
        resolve(f"oci://{registry}/{repo}:2.0.0")


# ---- hostile layers -----------------------------------------------------------------------------------------


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


GOOD = b"model bytes " * 200


def _hostile_cases() -> list[tuple[str, list, dict[str, bytes], str]]:
    """(id, tar members, what the image's manifest label claims, words of the one-line error)."""
    claim = {"w.bin": GOOD}
    ok = [dir_member("opt"), dir_member("opt/modelship"), dir_member(BASE)]
    return [
        ("dotdot", [*ok, file_member(f"{BASE}/../../../etc/cron.d/x", GOOD)], claim, "'..'"),
        ("absolute", [*ok, file_member("/etc/cron.d/x", GOOD)], claim, "absolute path"),
        ("symlink-out", [*ok, _symlink(f"{BASE}/w.bin", "/etc/shadow")], claim, "symbolic link"),
        ("hardlink", [*ok, _hardlink(f"{BASE}/w.bin", "etc/passwd")], claim, "hard link"),
        ("device", [*ok, _device(f"{BASE}/w.bin")], claim, "device or fifo"),
        ("outside", [*ok, file_member("etc/w.bin", GOOD)], claim, "outside the model dir"),
        ("whiteout", [*ok, file_member(f"{BASE}/.wh.w.bin", b"")], claim, "whiteout"),
        ("size-lies", [*ok, file_member(f"{BASE}/w.bin", GOOD + b"more")], claim, "bytes in the tar"),
        ("sha-lies", [*ok, file_member(f"{BASE}/w.bin", GOOD[:-1] + b"!")], claim, "has sha256"),
        ("not-listed", [*ok, file_member(f"{BASE}/w.bin", GOOD), file_member(f"{BASE}/x", b"1")], claim, "not list"),
        ("missing", [*ok], claim, "in none of its model layers"),
        ("long-pax", [*ok, file_member(f"{BASE}/" + "a" * 70_000, GOOD)], claim, "extended tar header"),
    ]


@pytest.mark.parametrize(
    ("members", "claim", "words"), [c[1:] for c in _hostile_cases()], ids=[c[0] for c in _hostile_cases()]
)
def test_hostile_tar_layers_are_refused_with_one_line_and_nothing_half_written(
    tmp_path, registry, monkeypatch, members, claim, words
):
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    repo = unique_repo("ms/hostile")
    push_model_image(registry, repo, "1.0.0", [tar_layer(members)], claim)
    proc = run_cli("fetch", f"oci://{registry}/{repo}", str(tmp_path / "dest"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr, proc.stderr
    assert not (tmp_path / "dest").exists() and leftovers(tmp_path) == []
    cache = Cache(tmp_path / "cache")
    assert cache_problems(cache) == [] and not any((cache.root / "sha256").rglob("*/*"))
    assert not Path("/etc/cron.d/x").exists()


def test_a_layer_the_registry_holds_damaged_is_caught_by_its_digest(tmp_path, monkeypatch):
    """The registry's own copy of a blob changed on disk: its bytes no longer hash to the digest the
    manifest names. Damage in a file is caught by the file's sha256 too; damage in tar padding only by the
    layer digest: both are refused, nothing enters the cache."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    with registry_process(tmp_path / "reg") as reg:
        uri = f"oci://{reg}/models/damaged"
        published = _publish(tmp_path / "m", uri, "1.0.0")
        big, size, _ = published.layers[0]
        data = tmp_path / "reg" / "data" / "docker/registry/v2/blobs/sha256" / big[7:9] / big[7:] / "data"
        original = data.read_bytes()
        assert len(original) == size
        for where, words in ((size - 10, "does not match its digest"), (size // 2, "has sha256")):
            damaged = bytearray(original)
            damaged[where] ^= 0xFF
            data.write_bytes(bytes(damaged))
            with pytest.raises(IntegrityError, match=words):
                fetch(uri, tmp_path / "dest", progress=False)
            assert not (tmp_path / "dest").exists()
            cache = Cache(tmp_path / "cache")
            assert cache_problems(cache) == []
            assert hashlib.sha256(original[1536 : 1536 + 1024 * 1024]).hexdigest() not in {
                p.name for p in (cache.root / "sha256").rglob("*") if p.is_file()
            }


def test_a_model_image_uri_is_checked_before_anything_is_asked(tmp_path):
    for bad in ("oci://", "oci://registry-only", "oci://127.0.0.1:5000/UPPER/case", "oci://r.io/x?sig=abc"):
        with pytest.raises(UsageError):
            resolve(bad)
    with pytest.raises(NotFoundError):
        resolve("oci://127.0.0.1:5000/ms/never-published-" + os.urandom(4).hex())


def test_the_same_credentials_as_push_read_and_write_a_secured_registry(tmp_path, monkeypatch):
    """docker login's config (auths) is what publish, resolve and fetch use; a wrong password is one line."""
    import base64

    import bcrypt

    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"ci:{hashed}\n")
    auth = f"auth: {{htpasswd: {{realm: test, path: {tmp_path / 'htpasswd'}}}}}\n"
    config = tmp_path / "docker"
    config.mkdir()
    with registry_process(tmp_path / "reg", auth) as secured:
        login = base64.b64encode(b"ci:right-password").decode()
        (config / "config.json").write_text(json.dumps({"auths": {secured: {"auth": login}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        uri = f"oci://{secured}/models/secured"
        _publish(tmp_path / "m", uri, "1.0.0")
        got = fetch(uri, tmp_path / "dest", progress=False)
        assert got.version == "1.0.0" and tree_sha256s(tmp_path / "dest") == tree_sha256s(tmp_path / "m" / "1.0.0")
        wrong = base64.b64encode(b"ci:wrong-password").decode()
        (config / "config.json").write_text(json.dumps({"auths": {secured: {"auth": wrong}}}))
        proc = run_cli("resolve", uri, env={"DOCKER_CONFIG": str(config)})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "credentials" in proc.stderr and "wrong-password" not in proc.stderr and "right-password" not in proc.stderr


def test_username_and_password_stdin_on_publish_resolve_lock_and_fetch(tmp_path):
    """--username/--password-stdin on every model verb for oci:// (issue 19 item 24), with no docker login at
    all; a wrong password is refused in one line without echoing it; other stores refuse a registry login."""
    from support.registries import htpasswd_registry

    model_files(tmp_path / "m", "1.0.0", big_mb=1)
    env = {"DOCKER_CONFIG": str(tmp_path / "no-docker-config"), "MODELSHIP_CACHE_DIR": str(tmp_path / "cache")}
    login = ["--username", "ci", "--password-stdin"]
    with htpasswd_registry(tmp_path / "reg", "ci", "right-password") as secured:
        uri = f"oci://{secured}/models/login"

        def run(*args: str, secret: str = "right-password"):  # noqa: S107 - the test registry's own
            return run_cli(*args, *login, stdin=secret + "\n", env=env)

        published = run("publish", str(tmp_path / "m"), uri, "--version", "1.0.0", "--json")
        assert published.returncode == 0, published.stderr
        ref = json.loads(published.stdout)["ref"]
        assert ref.startswith(f"{secured}/models/login@sha256:")
        resolved = run("resolve", uri, "--json")
        assert resolved.returncode == 0 and json.loads(resolved.stdout)["version"] == "1.0.0", resolved.stderr
        locked = run("lock", uri, "-o", str(tmp_path / "modelship.lock"), "--json")
        assert locked.returncode == 0 and json.loads(locked.stdout)["ref"] == ref, locked.stderr
        fetched = run("fetch", "--lock", str(tmp_path / "modelship.lock"), str(tmp_path / "dest"))
        assert fetched.returncode == 0, fetched.stderr
        assert tree_sha256s(tmp_path / "dest") == tree_sha256s(tmp_path / "m")
        for wrong in (run("resolve", uri, secret="wrong-password"), run_cli("resolve", uri, env=env)):
            assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
            assert "credentials" in wrong.stderr and "right-password" not in wrong.stderr
            assert "wrong-password" not in wrong.stderr
    half = run_cli("resolve", uri, "--username", "ci", env=env)
    assert half.returncode == 2 and "--password-stdin" in half.stderr, half.stderr
    az = run_cli("fetch", "az://devstoreaccount1/models/m", str(tmp_path / "x"), *login, stdin="pw\n", env=env)
    assert az.returncode == 2 and "are for registries (oci://)" in az.stderr, az.stderr
