"""The model image's signature layer (oci.modelsig): adding and removing it are inverse, byte for byte, and its
reader takes a tar of model.sig in the model dir and nothing else (a malformed signature, never a crash)."""

from __future__ import annotations

import io
import tarfile

import pytest

from modelship.errors import SignatureError
from modelship.oci import modelsig
from modelship.oci.layers import data_layer
from modelship.oci.write import dumps

MODEL_DIR = "/opt/modelship/model"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def _image():
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 9},
        "layers": [{"mediaType": LAYER, "digest": "sha256:" + "2" * 64, "size": 4096}],
    }
    config = {
        "created": "1970-01-01T00:00:00Z",
        "config": {"Labels": {"io.modelship.model.dir": MODEL_DIR}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "modelship publish: x"}],
    }
    return manifest, config


def test_with_and_without_signature_are_inverse_byte_for_byte():
    manifest, config = _image()
    layer = data_layer(MODEL_DIR, "model.sig", b'{"bundle": 1}\n')
    digest = layer.digest(memo=False)
    m, c = modelsig.with_signature(manifest, config, layer, digest)
    assert modelsig.signature_digest(c) == digest and m["layers"][-1]["digest"] == digest
    assert c["rootfs"]["diff_ids"][-1] == digest and len(c["history"]) == 2
    back = modelsig.without_signature(m, c)
    assert (dumps(back[0]), dumps(back[1])) == (dumps(manifest), dumps(config))
    assert modelsig.without_signature(manifest, config) == (manifest, config)  # unsigned: unchanged


def test_the_reader_returns_the_bundle_of_a_signature_layer():
    layer = data_layer(MODEL_DIR, "model.sig", b"the bundle")
    assert modelsig._bundle_of(b"".join(layer.iter_bytes(0, layer.size)), MODEL_DIR, "sig") == b"the bundle"


def _tar(*members: tuple[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("layer", "why"),
    [
        (_tar(("opt/modelship/model/model.sig", b"a"), ("opt/modelship/model/x.bin", b"b")), "x.bin"),
        (_tar(("opt/modelship/model/model.sig", b"a"), ("opt/modelship/model/model.sig", b"b")), "model.sig"),
        (_tar(("opt/modelship/other/model.sig", b"a")), "other/model.sig"),
        (_tar(("etc", None)), "folder 'etc'"),
        (_tar(("opt/modelship/model/../../../etc/model.sig", b"a")), "not a signature layer"),
        (_tar(("opt/modelship/model", None)), "no model.sig in it"),
        (b"not a tar" * 200, "not a signature layer"),
    ],
    ids=["another-file", "twice", "outside-the-model-dir", "another-folder", "dot-dot", "empty", "garbage"],
)
def test_a_layer_that_is_not_just_model_sig_is_a_malformed_signature(layer, why):
    with pytest.raises(SignatureError) as err:
        modelsig._bundle_of(layer, MODEL_DIR, "sig")
    assert err.value.kind == SignatureError.MALFORMED and why in str(err.value)
