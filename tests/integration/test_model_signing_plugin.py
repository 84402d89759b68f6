"""The plugin's ``model_signature`` check (``--modelship-verify-key PUB.pem``, env MODELSHIP_VERIFY_KEYS, ini
modelship_verify_key): the model files are read out of the running container, their sha256s computed and its
model.sig verified against the keys. It passes for a signed model and fails in one line for an unsigned one,
another key, and a byte changed inside the image after it was built; a key file that is not a key stops the run."""

from __future__ import annotations

import io
import tarfile
import uuid

import pytest

import modelship
from modelship.image import build
from support.builds import make_app
from support.oms import keypair, model_folder
from support.plugin_runs import run_pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.docker
MODEL_DIR = "/opt/modelship/model"


@pytest.fixture(scope="module")
def images(tmp_path_factory, docker_client, base_image):
    """(signed image, unsigned image, signed image with one model byte changed, team key, other key)."""
    tmp = tmp_path_factory.mktemp("sigplugin")
    private, public = keypair(tmp, "team")
    _, other = keypair(tmp, "other")
    store = tmp / "store" / "iris"
    modelship.publish(model_folder(tmp / "model"), store.as_uri(), version="1.0.0", sign_key=private, progress=False)
    dest = tmp / "dest"
    modelship.fetch(store.as_uri(), dest, verify_keys=[public], progress=False)
    app = make_app(tmp / "app", requirements="")
    name = f"modelship-test/sigplugin-{uuid.uuid4().hex[:8]}"
    kw = {"base_image": base_image, "entrypoint": "python app.py", "docker_client": docker_client}
    signed = build(app, dest, f"{name}:signed", verify_keys=[public], **kw).tags[0]
    unsigned = build(app, model_folder(tmp / "unsigned"), f"{name}:unsigned", **kw).tags[0]
    # the signed image with one byte of model.onnx changed, as a later layer would (docker commit)
    data = bytearray((dest / "model.onnx").read_bytes())
    data[7] ^= 0x01
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size, info.mode = len(data), 0o444
        tar.addfile(info, io.BytesIO(bytes(data)))
    cid = docker_client.api.create_container(signed)["Id"]  # never started: its config is the image's
    try:
        docker_client.api.put_archive(cid, MODEL_DIR, buf.getvalue())
        docker_client.api.commit(cid, name, "flipped")
    finally:
        docker_client.api.remove_container(cid, force=True)
    yield signed, unsigned, f"{name}:flipped", public, other
    for tag in ("signed", "unsigned", "flipped"):
        docker_client.images.remove(f"{name}:{tag}", force=True)


def _run(pytester, image: str, *args: str):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    return run_pytest(pytester, "-v", "--modelship-image", image, "-k", "model_signature", *args, timeout=180)


def _failure_lines(result) -> list[str]:
    out = result.stdout.lines
    start = next(i for i, line in enumerate(out) if "image check model_signature failed" in line)
    # the failure's own block: with CI set, pytest's short summary repeats the whole message further down
    block = []
    for line in out[start + 1 :]:
        if not line.startswith("  - "):
            break
        block.append(line)
    return block


def test_a_signed_model_passes(pytester, images):
    signed, _, _, public, _ = images
    result = _run(pytester, signed, "--modelship-verify-key", str(public))
    result.assert_outcomes(passed=1)
    assert "model_signature PASSED" in result.stdout.str()
    assert f"modelship verify keys: {public} (from --modelship-verify-key)" in result.stdout.str()


def test_without_a_verify_key_there_is_no_signature_check(pytester, images):
    result = _run(pytester, images[0])
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # -k model_signature: nothing by that name
    assert "model_signature" not in result.stdout.str()


def test_an_unsigned_model_fails_in_one_line(pytester, images, monkeypatch):
    _, unsigned, _, public, _ = images
    monkeypatch.setenv("MODELSHIP_VERIFY_KEYS", str(public))
    result = _run(pytester, unsigned)
    result.assert_outcomes(failed=1)
    assert _failure_lines(result) == [
        f"  - no {MODEL_DIR}/model.sig: the model is unsigned; build or assemble it from a folder fetched with "
        "--verify-key"
    ]


def test_another_key_fails_in_one_line(pytester, images):
    signed, _, _, _, other = images
    pytester.makeini(f"[pytest]\nmodelship_verify_key =\n    {other}\n")
    result = _run(pytester, signed)
    result.assert_outcomes(failed=1)
    [line] = _failure_lines(result)
    assert line.startswith(f"  - {MODEL_DIR}/model.sig: not signed by any of the 1 verify key(s)"), line


def test_a_byte_changed_inside_the_image_fails_in_one_line(pytester, images):
    _, _, flipped, public, _ = images
    result = _run(pytester, flipped, "--modelship-verify-key", str(public))
    result.assert_outcomes(failed=1)
    [line] = _failure_lines(result)
    assert line.startswith(f"  - {MODEL_DIR}/model.sig: file model.onnx has sha256 "), line
    assert line.endswith("; these are not the bytes its signer signed"), line


def test_a_key_file_that_is_not_a_key_stops_the_run(pytester, images, tmp_path):
    (tmp_path / "not.pem").write_text("hello\n")
    result = _run(pytester, images[0], "--modelship-verify-key", str(tmp_path / "not.pem"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"ERROR: modelship: --modelship-verify-key: {tmp_path / 'not.pem'}: not a PEM public key; "
        "export one with openssl ec -pubout"
    ) in result.stderr.lines
