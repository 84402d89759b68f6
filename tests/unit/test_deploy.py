"""deploy render: manifests pinned by digest, valid against the Kubernetes schemas (offline), safe by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelship import cli
from modelship.deploy import default_template_dir, render
from modelship.errors import ModelshipError, UsageError
from support import ROOT
from support.kube import KUBE_VERSIONS, by_kind, validate

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"myregistry.azurecr.io/iris-service@{DIGEST}"
# what an image built with the defaults says about itself; given explicitly, render need not read the image
APP = {"port": 8000, "ready_path": "/health/ready", "live_path": "/health/live"}
APP_ARGS = ["--port", "8000", "--ready-path", "/health/ready", "--live-path", "/health/live"]


@pytest.fixture
def rendered(tmp_path) -> list[Path]:
    return render(IMAGE, tmp_path / "k8s", name="iris-service", replicas=3, **APP)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_manifests_pass_strict_schema_validation(rendered, version):
    proc = validate(rendered, version)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 2, proc.stdout


def test_strict_validation_catches_a_misspelt_field(tmp_path, rendered):
    # proves the validator above is not vacuous: one typo in a probe fails it
    doc = yaml.safe_load(rendered[0].read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = validate([bad])
    assert proc.returncode != 0


def test_image_is_pinned_by_digest_and_names_are_applied(rendered):
    assert [p.name for p in rendered] == ["deployment.yaml", "service.yaml"]
    text = "".join(p.read_text() for p in rendered)
    assert "registry.invalid" not in text
    assert "modelship-app" not in text
    docs = by_kind(rendered)
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
    dep = by_kind(rendered)["Deployment"]
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
    svc = by_kind(rendered)["Service"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_rendering_is_deterministic(tmp_path, rendered):
    again = render(IMAGE, tmp_path / "again", name="iris-service", replicas=3, **APP)
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
    dep = by_kind(render(image, tmp_path, **APP))["Deployment"]
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
    out = render(IMAGE, tmp_path / "out", name="iris", template_dir=tpl, **APP)
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
    proc = validate(out)
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
    out = str(tmp_path / "k8s")
    assert cli.main(["deploy", "render", "--image", IMAGE, "--out", out, "--replicas", "4", *APP_ARGS]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "k8s" / "deployment.yaml"), str(tmp_path / "k8s" / "service.yaml")]
    assert by_kind([Path(p) for p in printed])["Deployment"]["spec"]["replicas"] == 4
    assert cli.main(["deploy", "render", "--image", "iris:latest", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelship: error: image 'iris:latest' is not pinned by digest")
    assert len(err.splitlines()) == 1


def test_a_folder_in_the_way_refuses_the_render_and_writes_nothing(tmp_path, capsys):
    """--out where service.yaml is a folder: one line naming it, and the old deployment.yaml kept (it was
    replaced and the service never written: half a deployment)."""
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "deployment.yaml").write_text("# mine\n")
    (out / "service.yaml").mkdir()
    rc = cli.main(["deploy", "render", "--image", IMAGE, "--out", str(out), *APP_ARGS])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err == (
        f"modelship: error: cannot write {out / 'service.yaml'}: it is a folder; remove it or choose another --out\n"
    )
    assert (out / "deployment.yaml").read_text() == "# mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "service.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s"]  # no temp folder left beside --out


def test_a_failed_rename_puts_back_the_files_already_moved(tmp_path, monkeypatch):
    """All or nothing also when the last rename fails (an interrupt, a file system error): the manifests
    already moved in are put back as they were, new ones removed."""
    import os

    out = tmp_path / "k8s"
    out.mkdir()
    (out / "deployment.yaml").write_text("# the previous render\n")
    real_replace = os.replace

    def fail_on_service(src, dst):
        if str(dst).endswith("service.yaml"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_service)
    with pytest.raises(ModelshipError, match=f"cannot write the manifests to {out}: Input/output error"):
        render(IMAGE, out, **APP)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml"]
    assert (out / "deployment.yaml").read_text() == "# the previous render\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s"]


def test_the_example_ships_the_default_templates():
    example = ROOT / "examples" / "flask_app" / "k8s"
    shipped = {p.name: p.read_text() for p in default_template_dir().glob("*.yaml")}
    assert {p.name: p.read_text() for p in example.glob("*.yaml")} == shipped


def test_an_image_that_cannot_be_read_names_the_options(tmp_path, capsys):
    """Rendering needs the image (or all three options): an unreadable one fails in one line saying so."""
    ref = f"127.0.0.1:1/modelship-test/absent@{DIGEST}"  # nothing listens on port 1
    assert cli.main(["deploy", "render", "--image", ref, "--out", str(tmp_path / "k8s")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith(
        "(deploy render reads the app's port and probe paths from the image; or pass --port, --ready-path, --live-path)"
    ), err
    assert not (tmp_path / "k8s").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "port must be a whole number between 1 and 65535"),
        ({"port": 70000}, "port must be a whole number between 1 and 65535"),
        ({"ready_path": "ready"}, "ready path must start with '/'"),
        ({"live_path": "/a b"}, "live path must start with '/'"),
    ],
)
def test_bad_port_or_paths_are_usage_errors(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        render(IMAGE, tmp_path / "out", **{**APP, **kwargs})
