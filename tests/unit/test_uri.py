from __future__ import annotations

import pytest

from modelship.errors import UsageError
from modelship.uri import parse, redact, strip_secrets


def test_az_uri_parts():
    u = parse("az://acct/models/iris/classifier")
    assert (u.scheme, u.location, u.container, u.prefix) == ("az", "acct", "models", "iris/classifier")


def test_https_blob_url_keeps_sas_out_of_display():
    u = parse("https://acct.blob.core.windows.net/models/iris?sv=2022-11-02&sp=rl&sig=SECRETSIG%3D")
    assert (u.scheme, u.location, u.container, u.prefix) == ("az", "acct", "models", "iris")
    assert "sig=" in u.query
    assert "SECRETSIG" not in u.display
    assert u.endpoint == "https://acct.blob.core.windows.net"


@pytest.mark.parametrize(
    ("raw", "scheme"),
    [("s3://bucket/a/b", "s3"), ("file:///tmp/m", "file"), ("/tmp/m", "file"), ("https://example.org/m.onnx", "https")],
)
def test_schemes(raw, scheme):
    assert parse(raw).scheme == scheme


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "az://",
        "az://acct",
        "az://acct/c/../x",
        "s3://",
        "https://example.org/",
        "file://host/x",
        "az://a/c/x\x01y",
    ],
)
def test_malformed_uris_are_usage_errors(bad):
    with pytest.raises(UsageError) as e:
        parse(bad)
    assert "\n" not in str(e.value)


def test_strip_secrets_removes_password_and_signature():
    assert strip_secrets("https://user:pw@host/x?sig=abc&sv=1") == "https://user@host/x"
    assert strip_secrets("https://host/x?a=1") == "https://host/x?a=1"


def test_redact_masks_credentials_in_free_text():
    text = "AccountKey=abc123==;BlobEndpoint=x SharedAccessSignature=sv=1&sig=zzz https://u:p@h/ ?sig=qq"
    out = redact(text)
    for secret in ("abc123", "zzz", ":p@", "qq"):
        assert secret not in out
