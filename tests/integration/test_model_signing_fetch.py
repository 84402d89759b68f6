"""``fetch --verify-key``: only a version signed by a given key over exactly its bytes is installed, with its
model.sig in DEST (judged by the reference ``model_signing verify key``); every refusal is one line, DEST untouched."""

from __future__ import annotations

import json
import shutil

import modelship
from modelship.manifest import SIGNATURE_NAME
from modelship.trust import oms
from support.cli import run_cli
from support.oms import flip_byte, keypair, model_folder, reference_sign, reference_verify
from support.trees import snapshot


def _published(tmp_path, key=None, version="1.0.0"):
    model = model_folder(tmp_path / f"model-{version}")
    store = tmp_path / "store" / "iris"
    modelship.publish(model, store.as_uri(), version=version, sign_key=key, progress=False)
    return store


def test_fetch_installs_a_signed_version_with_a_signature_the_reference_verifier_accepts(tmp_path):
    private, public = keypair(tmp_path)
    store = _published(tmp_path, private)
    dest = tmp_path / "dest"
    r = run_cli("fetch", store.as_uri(), str(dest), "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    ok = reference_verify(dest / SIGNATURE_NAME, public, dest, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    again = run_cli("fetch", store.as_uri(), str(dest), env={"MODELSHIP_VERIFY_KEYS": str(public)})
    assert again.returncode == 0, again.stderr  # DEST with its model.sig is modelship's to replace
    flip_byte(dest / "model.onnx")
    assert reference_verify(dest / SIGNATURE_NAME, public, dest).returncode != 0


def test_an_unsigned_version_is_refused_and_nothing_installed(tmp_path):
    _, public = keypair(tmp_path)
    store = _published(tmp_path)
    dest = tmp_path / "dest"
    r = run_cli("fetch", store.as_uri(), str(dest), "--verify-key", str(public))
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert line.endswith(" version 1.0.0 model.sig: the version is unsigned; publish it with --sign-key"), line
    assert not dest.exists()


def test_another_key_or_other_bytes_are_refused_and_dest_untouched(tmp_path):
    private, public = keypair(tmp_path, "team")
    attacker, _ = keypair(tmp_path, "attacker")
    store = _published(tmp_path, private)
    dest = tmp_path / "dest"
    assert run_cli("fetch", store.as_uri(), str(dest), "--verify-key", str(public)).returncode == 0
    before = snapshot(dest)

    # re-published with other bytes, signed by another key
    other = model_folder(tmp_path / "evil")
    (other / "model.onnx").write_bytes(b"evil")
    modelship.publish(other, store.as_uri(), version="1.0.0", force=True, sign_key=attacker, progress=False)
    r = run_cli("fetch", store.as_uri(), str(dest), "--version", "1.0.0", "--verify-key", str(public))
    assert r.returncode == 1 and "not signed by any of the 1 verify key(s)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert snapshot(dest) == before

    # the team's signature of the old bytes put back beside the new ones: bytes differ
    good = _published(tmp_path / "again", private)
    shutil.copy(good / "1.0.0" / SIGNATURE_NAME, store / "1.0.0" / SIGNATURE_NAME)
    r = run_cli("fetch", store.as_uri(), str(dest), "--verify-key", str(public))
    assert r.returncode == 1 and "model.onnx has sha256" in r.stderr
    assert snapshot(dest) == before


def test_a_reference_signature_uploaded_by_hand_verifies_in_fetch(tmp_path):
    private, public = keypair(tmp_path)
    store = _published(tmp_path)
    model = tmp_path / "model-1.0.0"
    reference_sign(private, tmp_path / "ref.sig", model)
    shutil.copy(tmp_path / "ref.sig", store / "1.0.0" / SIGNATURE_NAME)
    dest = tmp_path / "dest"
    r = modelship.fetch(store.as_uri(), dest, verify_keys=[public], progress=False)
    assert r.version == "1.0.0"
    assert (dest / SIGNATURE_NAME).read_bytes() == (tmp_path / "ref.sig").read_bytes()
    assert oms.verify(
        (dest / SIGNATURE_NAME).read_bytes(),
        {f.path: f.sha256 for f in r.manifest.files},
        oms.load_public_keys([public]),
    ).files


def test_resolve_and_lock_refuse_a_version_not_signed_by_the_key(tmp_path):
    private, public = keypair(tmp_path, "team")
    _, other = keypair(tmp_path, "other")
    store = _published(tmp_path, private)
    assert run_cli("resolve", store.as_uri(), "--verify-key", str(public)).returncode == 0
    lock_file = tmp_path / "modelship.lock"
    ok = run_cli("lock", store.as_uri(), "-o", str(lock_file), "--verify-key", str(other), "--verify-key", str(public))
    assert ok.returncode == 0, ok.stderr
    assert lock_file.is_file()

    refused = tmp_path / "refused.lock"
    for args in (["resolve", store.as_uri()], ["lock", store.as_uri(), "-o", str(refused)]):
        r = run_cli(*args, "--verify-key", str(other))
        [line] = r.stderr.strip().splitlines()
        assert r.returncode == 1 and "not signed by any of the 1 verify key(s)" in line, r.stderr
    assert not refused.exists()


def test_latest_skips_newer_versions_that_do_not_verify_saying_so(tmp_path):
    private, public = keypair(tmp_path, "team")
    attacker, _ = keypair(tmp_path, "attacker")
    store = _published(tmp_path, private, "1.0.0")
    _published(tmp_path, None, "9.9.9")  # an attacker's unsigned version
    _published(tmp_path, attacker, "9.9.10")  # and one signed by another key
    dest = tmp_path / "dest"
    r = run_cli("fetch", store.as_uri(), str(dest), "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    assert (dest / "modelship.json").read_text().count('"version": "1.0.0"') == 1
    [line] = [x for x in r.stderr.splitlines() if "skipped" in x]
    assert "9.9.10 (unknown key), 9.9.9 (unsigned)" in line and line.endswith("latest is 1.0.0")
    res = run_cli("resolve", store.as_uri(), "--verify-key", str(public), "--json")
    assert res.returncode == 0 and '"1.0.0"' in res.stdout
    # a pinned version that does not verify is refused, not replaced by an older one
    pinned = run_cli("fetch", store.as_uri(), str(tmp_path / "d2"), "--version", "9.9.9", "--verify-key", str(public))
    assert pinned.returncode == 1 and "unsigned" in pinned.stderr
    assert not (tmp_path / "d2").exists()
    # nothing verifies: one line naming every version skipped
    _, stranger = keypair(tmp_path, "stranger")
    none = run_cli("resolve", store.as_uri(), "--verify-key", str(stranger))
    [line] = none.stderr.strip().splitlines()
    assert none.returncode == 1 and "no version verifies" in line and "1.0.0 (unknown key)" in line


def test_json_output_names_the_skipped_versions_and_why(tmp_path):
    private, public = keypair(tmp_path, "team")
    attacker, _ = keypair(tmp_path, "attacker")
    store = _published(tmp_path, private, "1.0.0")
    _published(tmp_path, None, "9.9.9")
    _published(tmp_path, attacker, "9.9.10")
    why = [{"version": "9.9.10", "reason": "unknown key"}, {"version": "9.9.9", "reason": "unsigned"}]
    key = ["--verify-key", str(public), "--json"]
    lock_file = tmp_path / "modelship.lock"
    for argv in (
        ["resolve", store.as_uri()],
        ["lock", store.as_uri(), "-o", str(lock_file)],
        ["fetch", store.as_uri(), str(tmp_path / "dest")],
        ["fetch", store.as_uri(), str(tmp_path / "dest")],  # again: unchanged, the same answer
    ):
        r = run_cli(*argv, *key)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["version"], out["skipped"]) == ("1.0.0", why), argv
    assert "skipped" not in json.loads(lock_file.read_text())  # the lock file pins, it does not report
    # verified and pinned (a version, a lock): nothing newer was passed over; no verify key: nothing was checked
    for argv in (
        ["resolve", store.as_uri(), "--version", "1.0.0", *key],
        ["fetch", "--lock", str(lock_file), str(tmp_path / "d2"), *key],
    ):
        r = run_cli(*argv)
        assert r.returncode == 0 and json.loads(r.stdout)["skipped"] == [], r.stderr
    r = run_cli("resolve", store.as_uri(), "--json")
    assert json.loads(r.stdout)["version"] == "9.9.10" and "skipped" not in json.loads(r.stdout)
    # the Python results carry it too
    assert [(x.version, x.reason) for x in modelship.resolve(store.as_uri(), verify_keys=[public]).skipped] == [
        ("9.9.10", "unknown key"),
        ("9.9.9", "unsigned"),
    ]


def test_a_lock_records_its_signer_and_refuses_a_version_re_signed_by_another_key(tmp_path):
    team, team_pub = keypair(tmp_path, "team")
    other, other_pub = keypair(tmp_path, "other")
    store = _published(tmp_path, team)
    lock_file = tmp_path / "modelship.lock"
    keys = ["--verify-key", str(team_pub), "--verify-key", str(other_pub)]
    assert run_cli("lock", store.as_uri(), "-o", str(lock_file), *keys).returncode == 0
    team_print = oms.fingerprint(oms.load_public_keys([team_pub])[0])
    assert json.loads(lock_file.read_text())["signer"] == team_print

    # the same bytes re-published and signed by the other (also trusted) key: the lock pins the signer
    modelship.publish(tmp_path / "model-1.0.0", store.as_uri(), version="1.0.0", force=True, sign_key=other)
    dest = tmp_path / "dest"
    r = run_cli("fetch", "--lock", str(lock_file), str(dest), *keys)
    [line] = r.stderr.strip().splitlines()
    assert r.returncode == 1 and f"the lock says {team_print}; re-lock" in line
    assert not dest.exists()
    assert run_cli("fetch", store.as_uri(), str(dest), *keys).returncode == 0  # not pinned: either key will do


def test_sign_model_signs_a_version_published_unsigned(tmp_path):
    private, public = keypair(tmp_path)
    store = _published(tmp_path)  # unsigned
    r = run_cli("sign-model", store.as_uri(), "--version", "1.0.0", "--sign-key", str(private))
    assert r.returncode == 0, r.stderr
    ok = reference_verify(store / "1.0.0" / SIGNATURE_NAME, public, store / "1.0.0", ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run_cli("fetch", store.as_uri(), str(tmp_path / "dest"), "--verify-key", str(public)).returncode == 0
    again = run_cli("sign-model", store.as_uri(), "--version", "1.0.0", "--sign-key", str(private))
    assert again.returncode == 2 and "already signed; --force replaces" in again.stderr
