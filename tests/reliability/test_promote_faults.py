"""``promote`` under registry faults: the fault proxy (tests/support/faults/proxy.py) between modelship and a
real registry cuts, stalls and fails requests while promote checks a digest's signature and moves a tag, or
copies the digest with its evidence to a second registry.

Never a tag moved by a refused promote: a digest not signed by the required key ends, whatever the faults, in a
one-line failure with ``stable`` where it was. A signed digest ends either promoted (the tag on it, and with
``--to`` the destination's signatures verifying, judged by tests/support/cosign_reader.py) or in a one-line
failure with the tag where it was.
"""

from __future__ import annotations

import functools
import os

import pytest

from modelship import promote
from modelship.errors import ModelshipError
from modelship.trust import cosign
from support import cosign_reader as reader
from support.faults.proxy import FaultProxy, RandomFaults, registry_fault
from support.modelimage import push_plain_image, unique_repo
from support.oci import image_problems, registry_process, tag_digest
from support.oms import keypair

pytestmark = pytest.mark.docker
TIMEOUT = 1.5  # seconds without an answer before a request counts as stalled


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    with registry_process(tmp_path_factory.mktemp("promote-faults-second")) as addr:
        yield addr


def _image(registry: str, repo: str, tag: str) -> str:
    return push_plain_image(registry, repo, tag, {"os": "linux", "architecture": "amd64", "t": tag}, os.urandom(8192))


@pytest.fixture
def staged(registry, tmp_path):
    """``stable`` on an old digest, a candidate signed by ``other`` only and one signed by ``team``:
    (repo, old, unsigned-by-team, signed, team public key)."""
    repo = unique_repo("promote-faults/app")
    old = _image(registry, repo, "stable")
    (team, team_pub), (other, _) = keypair(tmp_path, "team"), keypair(tmp_path, "other")
    wrong, signed = _image(registry, repo, "wrong"), _image(registry, repo, "signed")
    cosign.sign(f"{registry}/{repo}@{wrong}", other)
    cosign.sign(f"{registry}/{repo}@{signed}", team)
    return repo, old, wrong, signed, team_pub


_random_fault = functools.partial(registry_fault, stall_past=TIMEOUT * 2)


def _through(address: str, seed: int, call, p: float = 0.4) -> tuple[object, FaultProxy]:
    host, port = address.split(":")
    with FaultProxy((host, int(port)), RandomFaults(seed, _random_fault, p=p, budget=4), lifetime=60) as proxy:
        try:
            outcome: object = call(f"127.0.0.1:{proxy.port}")
        except ModelshipError as e:
            outcome = e
    return outcome, proxy


@pytest.mark.parametrize("seed", range(4))
def test_a_refused_promote_never_moves_the_tag_whatever_the_faults(registry, staged, seed):
    repo, old, wrong, _, team_pub = staged
    call = lambda at: promote(f"{at}/{repo}@{wrong}", ["stable"], require_keys=[team_pub], timeout=TIMEOUT)  # noqa: E731
    outcome, proxy = _through(registry, seed, call, p=0.7)  # a refusal takes a few requests only: most are hit
    assert isinstance(outcome, ModelshipError) and "\n" not in str(outcome), (seed, outcome)
    assert tag_digest(registry, repo, "stable") == old, (seed, proxy.stats.injected)
    assert proxy.stats.injected, "the plan injected nothing"


@pytest.mark.parametrize("seed", range(4))
def test_a_signed_digest_is_promoted_or_the_tag_stays_whatever_the_faults(registry, staged, seed):
    repo, old, _, signed, team_pub = staged
    outcome, proxy = _through(
        registry,
        seed,
        lambda at: promote(f"{at}/{repo}@{signed}", ["stable"], require_keys=[team_pub], timeout=TIMEOUT),
    )
    held = tag_digest(registry, repo, "stable")
    if isinstance(outcome, ModelshipError):
        assert held == old and "\n" not in str(outcome), (seed, outcome, proxy.stats.injected)
    else:
        assert held == signed, (seed, proxy.stats.injected)
    assert proxy.stats.injected, "the plan injected nothing"


@pytest.mark.parametrize("seed", range(4))
def test_promote_to_a_faulty_registry_ends_complete_and_verified_or_with_the_tag_unmoved(
    registry, second, staged, seed
):
    repo, _, wrong, signed, team_pub = staged
    mirror = unique_repo("promote-faults/prod")
    _image(second, mirror, "stable")
    before = tag_digest(second, mirror, "stable")
    for digest in (wrong, signed):
        outcome, proxy = _through(
            second,
            seed,
            lambda at, d=digest: promote(
                f"{registry}/{repo}@{d}", ["stable"], to=f"{at}/{mirror}", require_keys=[team_pub], timeout=TIMEOUT
            ),
        )
        held = tag_digest(second, mirror, "stable")
        if digest == wrong or isinstance(outcome, ModelshipError):
            assert isinstance(outcome, ModelshipError) and "\n" not in str(outcome), (seed, digest, outcome)
            assert held == before, (seed, digest, proxy.stats.injected)
            continue
        assert held == signed and image_problems(second, mirror, "stable") == [], (seed, proxy.stats.injected)
        assert image_problems(second, mirror, reader.sig_tag(signed)) == []
        assert reader.verified_by(second, mirror, signed, team_pub, signed_at=f"{registry}/{repo}") == 1
