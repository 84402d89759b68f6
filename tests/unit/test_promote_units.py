"""``promote --to`` carries referrers, against registries in this process that answer the OCI 1.1 referrers API
(tests/support/referrers_registry.py, a stand-in: the testbed's distribution 2.8 has no such API; the tag path
against real registries is tests/integration/test_promote.py), and the arguments promote refuses up front."""

from __future__ import annotations

import json

import pytest

from modelship import promote
from modelship.errors import SignatureError, UsageError
from modelship.trust import cosign
from support.oms import keypair
from support.referrers_registry import push_image, referrers_registry

REPO = "team/app"
SIG_REFERRER = "application/vnd.dev.cosign.artifact.sig.v1+json"


@pytest.fixture
def key(tmp_path):
    return keypair(tmp_path, "team")


def _referrers(handler, repo: str, digest: str) -> dict[str, bytes]:
    return {
        ref: data
        for (r, ref), (data, _) in handler.manifests.items()
        if r == repo and ref.startswith("sha256:") and (json.loads(data).get("subject") or {}).get("digest") == digest
    }


def test_referrers_are_carried_where_both_registries_serve_the_api_and_a_rerun_sends_nothing(key):
    private, public = key
    with referrers_registry() as (src, s_handler), referrers_registry() as (dst, d_handler):
        digest = push_image(src, s_handler, REPO)
        signed = cosign.sign(f"{src}/{REPO}@{digest}", private).image_signature
        assert signed.referrer is not None
        # a signature only as a referrer (cosign sign --registry-referrers-mode=oci-1-1): no .sig tag
        del s_handler.manifests[(REPO, cosign.signature_tag(digest))]

        r = promote(f"{src}/{REPO}@{digest}", ["stable"], to=f"{dst}/prod/app", require_keys=[public])
        assert r.verified == (f"signature by {signed.signer}",) and r.tags == (f"{dst}/prod/app:stable",)
        assert (
            r.copied is not None and r.copied.tags == () and (r.copied.referrers, r.copied.referrers_skipped) == (1, 0)
        )
        assert _referrers(d_handler, "prod/app", digest) == _referrers(s_handler, REPO, digest)  # the same bytes
        assert cosign.verify(f"{dst}/prod/app@{digest}", [public]).signature == f"{dst}/prod/app@{signed.referrer}"

        again = promote(f"{src}/{REPO}@{digest}", ["stable"], to=f"{dst}/prod/app", require_keys=[public])
        assert again.uploaded_bytes == 0 and again.copied is not None and again.copied.referrers == 1


def test_a_destination_without_the_api_gets_the_tags_and_the_skipped_referrers_are_counted(key):
    private, public = key
    with referrers_registry() as (src, s_handler), referrers_registry(referrers_api=False) as (dst, d_handler):
        digest = push_image(src, s_handler, REPO)
        cosign.sign(f"{src}/{REPO}@{digest}", private)
        r = promote(f"{src}/{REPO}@{digest}", [], to=f"{dst}/prod/app", require_keys=[public])
        assert r.tags == () and r.copied is not None
        assert r.copied.tags == (f"{dst}/prod/app:{cosign.signature_tag(digest)}",)
        assert (r.copied.referrers, r.copied.referrers_skipped) == (0, 1)
        assert _referrers(d_handler, "prod/app", digest) == {}
        assert cosign.verify(f"{dst}/prod/app@{digest}", [public]).signer == r.verified[0].split()[-1]


def test_a_refusal_at_the_source_writes_nothing_at_the_destination(tmp_path, key):
    _, public = key
    other_private, _ = keypair(tmp_path, "other")
    with referrers_registry() as (src, s_handler), referrers_registry() as (dst, d_handler):
        digest = push_image(src, s_handler, REPO)
        cosign.sign(f"{src}/{REPO}@{digest}", other_private)
        with pytest.raises(SignatureError) as e:
            promote(f"{src}/{REPO}@{digest}", ["stable"], to=f"{dst}/prod/app", require_keys=[public])
        assert e.value.kind == SignatureError.UNKNOWN_KEY and "\n" not in str(e.value)
        assert str(e.value).startswith(f"promote refused: {src}/{REPO}@{digest}: none of its ")
        assert d_handler.manifests == {} and d_handler.blobs == {}


@pytest.mark.parametrize(
    ("tags", "to", "message"),
    [
        ([], None, "give at least one --tag"),
        (["r.example/other:stable"], None, "promote tags within r.example/team/app"),
        (["stable"], "r.example/team/app", "leave out --to"),
        (["stable"], "r2.example/prod:1", "not a tag or digest"),
        (["r.example/team/app:stable"], "r2.example/prod", "promote tags within r2.example/prod"),
    ],
)
def test_arguments_promote_refuses_before_asking_a_registry(tags, to, message):
    digest = "sha256:" + "a" * 64
    with pytest.raises(UsageError, match=message):
        promote(f"r.example/team/app@{digest}", tags, to=to)
