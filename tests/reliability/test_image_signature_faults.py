"""``modelship sign`` under registry faults: the fault proxy (tests/support/faults/proxy.py) between modelship and
the real registry cuts, stalls and fails requests while a second signature is appended to an image's
``sha256-<hex>.sig`` manifest.

Every run must end with the ``.sig`` tag on a complete manifest that holds the earlier signature and the new
one (each blob present, asked of the registry directly, judged by tests/support/cosign_reader.py), or with a
one-line failure and the tag where it was: a signature is never lost, and never points at a half-written
manifest.
"""

from __future__ import annotations

import functools
import os

import pytest

from modelship.errors import ModelshipError
from modelship.trust import cosign
from support import cosign_reader as reader
from support.faults.proxy import Fault, FaultProxy, RandomFaults, Request, first, registry_fault
from support.modelimage import push_plain_image, unique_repo
from support.oci import image_problems, tag_digest
from support.oms import keypair

pytestmark = pytest.mark.docker
TIMEOUT = 1.5  # seconds without an answer before a request counts as stalled


def is_sig_tag_put(r: Request) -> bool:
    return r.method == "PUT" and "/manifests/" in r.target and r.target.endswith(".sig")


@pytest.fixture
def signed_once(registry, tmp_path):
    """An image (plain HTTP pushes) signed once by ``old`` without faults: (repo, digest, .sig digest, keys)."""
    repo = unique_repo("sign-faults/app")
    digest = push_plain_image(registry, repo, "1", {"architecture": "amd64", "os": "linux"}, os.urandom(2048))
    old, new = keypair(tmp_path, "old"), keypair(tmp_path, "new")
    before = cosign.sign(f"{registry}/{repo}@{digest}", old[0]).image_signature.signature_digest
    return repo, digest, before, old, new


def _sign_through(registry, plan, signed_once):
    repo, digest, _, _, (new_private, _) = signed_once
    host, port = registry.split(":")
    with FaultProxy((host, int(port)), plan, lifetime=60) as proxy:
        try:
            outcome: object = cosign.sign(f"127.0.0.1:{proxy.port}/{repo}@{digest}", new_private, timeout=TIMEOUT)
        except ModelshipError as e:
            outcome = e
    return outcome, proxy


def _problems(registry, outcome, signed_once) -> list[str]:
    repo, digest, before, (_, old_public), (_, new_public) = signed_once
    tag = reader.sig_tag(digest)
    held = tag_digest(registry, repo, tag)
    if isinstance(outcome, ModelshipError):
        problems = [] if held == before else [f"failed, but {tag} moved from {before[:19]} to {held}"]
        return problems + ([f"error is not one line: {outcome!r}"] if "\n" in str(outcome) else [])
    if held != outcome.image_signature.signature_digest:
        return [f"{tag} holds {held}, sign returned {outcome.image_signature.signature_digest}"]
    problems = image_problems(registry, repo, tag)
    found = reader.read_signatures(registry, repo, digest)
    for key, name in ((old_public, "old"), (new_public, "new")):
        # the payload names the repository as signed: the old one directly, the new one through the proxy
        if not any(reader.accepts(f, key, _identity(f), digest) for f in found):
            problems.append(f"the {name} signature is missing or does not verify")
    return problems


def _identity(found: reader.Found) -> str:
    return found.claims["critical"]["identity"]["docker-reference"]


def test_5xx_on_the_sig_tag_put_is_retried_and_both_signatures_are_kept(registry, signed_once):
    outcome, proxy = _sign_through(registry, first(2, Fault.answer(503), is_sig_tag_put), signed_once)
    assert not isinstance(outcome, Exception), outcome
    assert proxy.stats.by_kind["status"] == 2 and _problems(registry, outcome, signed_once) == []


def test_a_registry_that_refuses_every_manifest_put_gives_one_line_and_leaves_the_tag(registry, signed_once):
    plan = lambda r: Fault.answer(503) if r.method == "PUT" and "/manifests/" in r.target else None  # noqa: E731
    outcome, _ = _sign_through(registry, plan, signed_once)
    assert isinstance(outcome, ModelshipError) and "HTTP 503" in str(outcome)
    assert _problems(registry, outcome, signed_once) == []


_random_fault = functools.partial(registry_fault, stall_past=TIMEOUT * 2)


@pytest.mark.parametrize("seed", range(6))
def test_seeded_random_faults_end_with_both_signatures_or_one_line_and_the_tag_unchanged(registry, signed_once, seed):
    plan = RandomFaults(seed, _random_fault, p=0.4, budget=4)
    outcome, proxy = _sign_through(registry, plan, signed_once)
    assert _problems(registry, outcome, signed_once) == [], (seed, proxy.stats.injected, outcome)
    assert proxy.stats.injected, "the plan injected nothing"
