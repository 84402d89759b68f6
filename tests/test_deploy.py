"""deploy render: manifests pinned by digest, valid against the Kubernetes schemas (offline), safe by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate.utils as kv
import pytest
import yaml

from modelship import cli
from modelship.deploy import default_template_dir, render
from modelship.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"myregistry.azurecr.io/iris-service@{DIGEST}"
KUBE_VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
# the oldest Kubernetes we claim (preStop sleep is on by default from 1.30) and the newest schema shipped
KUBE_VERSIONS = ["1.30.0", kv.latest_version()]


def _docs(paths: list[Path]) -> dict[str, dict]:
    docs = [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture
def rendered(tmp_path) -> list[Path]:
    return render(IMAGE, tmp_path / "k8s", name="iris-service", replicas=3)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_manifests_pass_strict_schema_validation(rendered, version):
    proc = subprocess.run(
        [str(KUBE_VALIDATE), "--strict", "-k", version, *map(str, rendered)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 2, proc.stdout


def test_strict_validation_catches_a_misspelt_field(tmp_path, rendered):
    # proves the validator above is not vacuous: one typo in a probe fails it
    doc = yaml.safe_load(rendered[0].read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([str(KUBE_VALIDATE), "--strict", "-k", KUBE_VERSIONS[-1], str(bad)], capture_output=True)
    assert proc.returncode != 0


def test_image_is_pinned_by_digest_and_names_are_applied(rendered):
    assert [p.name for p in rendered] == ["deployment.yaml", "service.yaml"]
    text = "".join(p.read_text() for p in rendered)
    assert "registry.invalid" not in text
    assert "modelship-app" not in text
    docs = _docs(rendered)
    dep, svc = docs["Deployment"], docs["Service"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert dep["metadata"]["name"] == svc["metadata"]["name"] == "iris-service"
    assert dep["spec"]["replicas"] == 3
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    # the selectors really select the pods: otherwise the Service would route nowhere
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_deployment_is_non_root_read_only_and_probed(rendered):
    dep = _docs(rendered)["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["runAsUser"] == 10001
    # the one writable place gunicorn needs, backed by an emptyDir
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names == {"http": 8000}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health/live"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_service_is_a_load_balancer_on_the_named_port(rendered):
    svc = _docs(rendered)["Service"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_rendering_is_deterministic(tmp_path, rendered):
    again = render(IMAGE, tmp_path / "again", name="iris-service", replicas=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in rendered]


@pytest.mark.parametrize(
    "image",
    [
        "myregistry.azurecr.io/iris-service:latest",
        "myregistry.azurecr.io/iris-service",
        "myregistry.azurecr.io/iris-service@sha256:0123",  # too short
        "myregistry.azurecr.io/iris-service@sha256:" + "0123456789ABCDEF" * 4,  # digests are lowercase
        "myregistry.azurecr.io/iris-service@md5:" + "0" * 32,
        DIGEST,  # a digest without a repository
        "",
        "My Registry/iris@" + DIGEST,
    ],
)
def test_an_image_not_pinned_by_digest_is_refused(tmp_path, image):
    with pytest.raises(UsageError, match=r"digest|REPO"):
        render(image, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "image",
    [
        f"127.0.0.1:5000/team/iris-service@{DIGEST}",
        f"myregistry.azurecr.io/iris-service:1.4.0@{DIGEST}",  # tag kept for humans, the digest decides
        f"iris@{DIGEST}",
    ],
)
def test_digest_references_are_accepted(tmp_path, image):
    dep = _docs(render(image, tmp_path))["Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Iris_Service"}, "not a valid Kubernetes name"),
        ({"name": "9iris"}, "not a valid Kubernetes name"),
        ({"name": "x" * 64}, "not a valid Kubernetes name"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": True}, "replicas"),
    ],
)
def test_bad_name_or_replicas_is_a_usage_error(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        render(IMAGE, tmp_path / "out", **kwargs)


def test_own_templates_keep_other_apps_names(tmp_path):
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    dep = yaml.safe_load((default_template_dir() / "deployment.yaml").read_text())
    (tpl / "app.yaml").write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "modelship-app-config"}, "data": {}},
                dep,
            ]
        )
    )
    (tpl / "netpol.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "modelship-app", "labels": {"app.kubernetes.io/name": "modelship-app"}},
                "spec": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "modelship-app"}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}]}
                    ],
                },
            }
        )
    )
    tpl_before = {p.name: p.read_bytes() for p in tpl.iterdir()}
    out = render(IMAGE, tmp_path / "out", name="iris", template_dir=tpl)
    assert [p.name for p in out] == ["app.yaml", "netpol.yaml"]
    docs = [d for p in out for d in yaml.safe_load_all(p.read_text())]
    cm, deployment, netpol = docs
    assert cm["metadata"]["name"] == "iris-config"
    assert deployment["metadata"]["name"] == "iris"
    assert netpol["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "iris"}
    # another app's label is not ours to rename
    assert netpol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ingress-nginx"
    }
    assert {p.name: p.read_bytes() for p in tpl.iterdir()} == tpl_before
    proc = subprocess.run(
        [str(KUBE_VALIDATE), "--strict", "-k", KUBE_VERSIONS[-1], *map(str, out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_template_folders_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        render(IMAGE, tmp_path / "out", template_dir=tmp_path / "missing")
    only_service = tmp_path / "svc"
    only_service.mkdir()
    (only_service / "service.yaml").write_text((default_template_dir() / "service.yaml").read_text())
    with pytest.raises(UsageError, match="no Deployment"):
        render(IMAGE, tmp_path / "out", template_dir=only_service)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "deployment.yaml").write_text("kind: Deployment\nmetadata: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        render(IMAGE, tmp_path / "out", template_dir=broken)
    with pytest.raises(UsageError, match="template folder"):
        render(IMAGE, only_service, template_dir=only_service)


def test_cli_renders_and_refuses_a_tag(tmp_path, capsys):
    assert cli.main(["deploy", "render", "--image", IMAGE, "--out", str(tmp_path / "k8s"), "--replicas", "4"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "k8s" / "deployment.yaml"), str(tmp_path / "k8s" / "service.yaml")]
    assert _docs([Path(p) for p in printed])["Deployment"]["spec"]["replicas"] == 4
    assert cli.main(["deploy", "render", "--image", "iris:latest", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelship: error: image 'iris:latest' is not pinned by digest")
    assert len(err.splitlines()) == 1


def test_the_example_ships_the_default_templates():
    example = ROOT / "examples" / "flask_app" / "k8s"
    shipped = {p.name: p.read_text() for p in default_template_dir().glob("*.yaml")}
    assert {p.name: p.read_text() for p in example.glob("*.yaml")} == shipped
