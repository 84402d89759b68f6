"""Credential hygiene, proven on the whole demo flow with a recognisable secret in every credential variable.

The demo's steps (train + publish, resolve, lock, fetch, build, smoke test with the plugin, push with a
password, inspect from the registry, render manifests) run through the CLI at the most verbose level (-vv),
with real credentials where they are used -- a SAS for the model store (Azurite), a password for a
registry with htpasswd auth -- and fake ones where they are not (AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN,
AWS_*), plus a token handed to the container under test. Failures are provoked with the secrets in the
environment (missing model, wrong password, a forged SAS, a failing Dockerfile, the Python API's tracebacks).
Then every output is searched for each secret, whole or any 16-character piece of it, raw, URL-quoted,
JSON-escaped or base64'd: stdout/stderr of every command, tracebacks, modelship.json, modelship.lock, the
JUnit XML, the rendered manifests, `docker history --no-trunc`, `docker inspect` and every layer and the
config of `docker save`. The counts go to $MODELSHIP_RELIABILITY_OUT/secrets.json for docs/reliability.md.

The smoke run also puts the example app under load: 200 concurrent probes of its ready path and 50
concurrent predictions through gunicorn, all answered.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tarfile
import traceback
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from support import ROOT
from support.engine import labelled_base, remove_labelled
from support.record import record_table
from support.registries import htpasswd_registry
from support.scanner import Scanner

pytestmark = pytest.mark.docker

EXAMPLE = ROOT / "examples" / "flask_app"
BIN = Path(sys.executable).parent
USER = "ci-bot"

LOAD_TEST = """
import concurrent.futures

def _burst(fn, n, workers=32):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda _: fn(), range(n)))

def test_example_app_under_load(modelship_client):
    ready = _burst(lambda: modelship_client.get("/health/ready", timeout=20).status_code, 200)
    assert ready == [200] * 200
    body = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    answers = _burst(lambda: modelship_client.post("/predict", json=body, timeout=20), 50, workers=16)
    assert [r.status_code for r in answers] == [200] * 50
    assert len({r.text for r in answers}) == 1  # same input, same answer, under load too
"""

FAILING_DOCKERFILE = 'FROM {base}\nRUN echo "installing the app" && exit 3\n'


def _fake(prefix: str, nbytes: int = 30) -> str:
    """A recognisable fake secret: a marker, then random base64 (so no piece of it occurs by chance)."""
    return f"{prefix}FAKE" + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _account_sas(connection_string: str) -> tuple[str, str, str]:
    """(endpoint, SAS token, its signature) for the Azurite account of the testbed."""
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    sas = generate_account_sas(
        parts["AccountName"],
        parts["AccountKey"],
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2),
    )
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    return parts["BlobEndpoint"].rstrip("/"), sas, unquote(sig)


class Flow:
    """Runs commands of the flow, keeping every output for the scan."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.outputs: list[tuple[str, str]] = []  # (command, stdout + stderr)
        self.failures: list[tuple[str, str]] = []  # (command, output) of the provoked failures

    def run(self, name: str, argv: list[str], *, stdin: str | None = None, fail: bool = False, env=None, timeout=900):
        proc = subprocess.run(
            argv,
            cwd=self.work,
            env=env or self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out = f"$ {' '.join(argv)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        if fail:
            assert proc.returncode != 0, f"{name} was expected to fail:\n{out[-3000:]}"
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            assert last.startswith(("modelship: error:", "train.py: error:")), (
                f"{name}: no one-line error\n{out[-3000:]}"
            )
            self.failures.append((name, out))
        else:
            assert proc.returncode == 0, f"{name} failed:\n{out[-4000:]}"
            self.outputs.append((name, out))
        return proc


@pytest.mark.slow
def test_demo_flow_leaks_no_secret_anywhere(
    tmp_path, docker_client, base_image, azurite_connection_string, blob_service, monkeypatch
):
    endpoint, sas, sig = _account_sas(azurite_connection_string)
    account_key = dict(p.split("=", 1) for p in azurite_connection_string.split(";") if "=" in p)["AccountKey"]
    password, wrong_password = _fake("REGPW"), _fake("WRONGPW")
    fake_sas_sig = _fake("SASSIG", 32)
    fake = {
        "AZURE_STORAGE_KEY": _fake("AZKEY", 64),
        "AZURE_STORAGE_SAS_TOKEN": f"sv=2024-11-04&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig={fake_sas_sig}",
        "AWS_ACCESS_KEY_ID": "AKIAMODELSHIPFAKE01",
        "AWS_SECRET_ACCESS_KEY": _fake("AWSSECRET"),
        "AWS_SESSION_TOKEN": _fake("AWSTOKEN", 60),
    }
    api_token = _fake("APITOKEN")
    scanner = Scanner(
        {
            "SAS signature (the store credential)": sig,
            "Azurite account key (given to no command)": account_key,
            "AZURE_STORAGE_KEY (fake)": fake["AZURE_STORAGE_KEY"],
            "AZURE_STORAGE_SAS_TOKEN signature (fake)": fake_sas_sig,
            "AWS_SECRET_ACCESS_KEY (fake)": fake["AWS_SECRET_ACCESS_KEY"],
            "AWS_SESSION_TOKEN (fake)": fake["AWS_SESSION_TOKEN"],
            "registry password": password,
            "registry password of a failed push": wrong_password,
            "registry user:password": f"{USER}:{password}",
            "API_TOKEN of the container under test": api_token,
        }
    )

    base, label = labelled_base(docker_client, base_image)  # every image of this test carries the label
    work = tmp_path / "work"
    work.mkdir()
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AWS_", "MODELSHIP_ENV"))}
    env.update(fake)
    env.update(
        {
            "AZURE_STORAGE_CONNECTION_STRING": f"BlobEndpoint={endpoint};SharedAccessSignature={sas}",
            "DOCKER_CONFIG": str(docker_config),  # no stored logins: the password comes from stdin
            "MODELSHIP_CACHE_DIR": str(tmp_path / "cache"),
            "MODELSHIP_ENV": f"API_TOKEN={api_token}",  # a pipeline secret handed to the container under test
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    flow = Flow(work, env)
    ms = [str(BIN / "modelship"), "-vv"]
    store = f"az://devstoreaccount1/hygiene-{uuid.uuid4().hex[:12]}/iris"

    try:
        with htpasswd_registry(tmp_path / "registry", USER, password) as reg:
            image = f"{reg}/hygiene/iris:v1"
            # -------------------------------------------------------------- the demo flow, at -vv
            train = [sys.executable, str(EXAMPLE / "train.py"), "--out", "trained"]
            flow.run("train + publish", [*train, "--publish", store, "--version", "1.0.0"])
            flow.run("resolve", [*ms, "resolve", store])
            flow.run("lock", [*ms, "lock", store, "-o", "modelship.lock"])
            flow.run("fetch", [*ms, "fetch", "--lock", "modelship.lock", "model", "--no-progress"])
            build = [*ms, "build", str(EXAMPLE), "--model", "model", "--tag", image, "--base-image", base]
            flow.run("build", [*build, "--tag-model-version", "--no-progress"])
            (work / "smoke").mkdir()
            (work / "smoke" / "pytest.ini").write_text("[pytest]\n")
            (work / "smoke" / "test_load.py").write_text(LOAD_TEST)
            smoke = [sys.executable, "-m", "pytest", "-c", "smoke/pytest.ini", "-p", "no:cacheprovider", "-vv"]
            smoke += ["--rootdir", "smoke", "--modelship-image", image]
            smoke += ["--modelship-cases", str(EXAMPLE / "modelship-cases.yaml"), "--junitxml", "smoke.xml"]
            smoke += ["-o", "junit_logging=system-out", "smoke/test_load.py"]
            flow.run("smoke test (plugin, example app under load)", smoke)
            login = ["--username", USER, "--password-stdin"]
            push = flow.run("push", [*ms, "push", image, *login, "--json"], stdin=password + "\n")
            digest = json.loads(push.stdout)["image_digest"]
            pinned = f"{reg}/hygiene/iris@{digest}"
            flow.run("inspect (local)", [*ms, "inspect", image, "--json"])
            flow.run("deploy render", [*ms, "deploy", "render", "--image", pinned, "--out", "k8s"])

            # -------------------------------------------------------------- failures, secrets in the env
            missing = f"az://devstoreaccount1/missing-{uuid.uuid4().hex[:8]}/iris"
            flow.run("fetch of a missing model", [*ms, "fetch", missing, "nowhere"], fail=True)
            flow.run("push with a wrong password", [*ms, "push", image, *login], stdin=wrong_password + "\n", fail=True)
            forged_sas = sas.replace(sas.split("sig=")[1], quote(fake_sas_sig, safe=""))
            forged = {
                **env,
                "AZURE_STORAGE_CONNECTION_STRING": f"BlobEndpoint={endpoint};SharedAccessSignature={forged_sas}",
            }
            flow.run("resolve with a forged SAS", [*ms, "resolve", store], env=forged, fail=True)
            (work / "bad").mkdir()
            (work / "bad" / "app.py").write_text("print('never built')\n")
            (work / "Dockerfile.bad").write_text(FAILING_DOCKERFILE.format(base=base))
            bad = [*ms, "build", "bad", "--model", "model", "--dockerfile", "Dockerfile.bad", "--base-image", base]
            flow.run("build with a failing Dockerfile", [*bad, "--tag", "modelship-test/hygiene-bad:never"], fail=True)
            api_tracebacks = _python_api_failures(monkeypatch, env, store, image, wrong_password, work / "api-dest")

            # -------------------------------------------------------------- artefacts of the image
            history = _docker("history", "--no-trunc", image)
            inspect = _docker("inspect", image)
            saved = tmp_path / "image.tar"
            subprocess.run(["docker", "save", "-o", str(saved), image], check=True, timeout=300)

            # remote inspect: the image only in the registry, credentials from a `docker login`-style config
            auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
            (docker_config / "config.json").write_text(json.dumps({"auths": {reg: {"auth": auth}}}))
            remove_labelled(docker_client, label)
            remote = flow.run("inspect (registry, stored login)", [*ms, "inspect", pinned, "--json"])
            assert json.loads(remote.stdout)["source"] == "registry"
            (docker_config / "config.json").unlink()  # the login file holds the password by design; not output
    finally:
        remove_labelled(docker_client, label)
        with contextlib.suppress(Exception):  # the store's blob container (published by train.py)
            blob_service.delete_container(store.split("/")[3])

    # ------------------------------------------------------------------ the scan
    for name, out in flow.outputs:
        scanner.text("stdout+stderr of CLI commands at -vv", out, name)
    for name, out in flow.failures:
        scanner.text("provoked failures: one-line errors and -vv tracebacks", out, name)
    for name, text in api_tracebacks:
        scanner.text("Python API exceptions: messages and formatted tracebacks", text, name)
    for path in [work / "model" / "modelship.json", work / "modelship.lock"]:
        scanner.text("modelship.json + modelship.lock", path.read_bytes(), path.name)
    scanner.text("JUnit XML of the smoke run", (work / "smoke.xml").read_bytes())
    for path in sorted((work / "k8s").iterdir()):
        scanner.text("rendered Kubernetes manifests", path.read_bytes(), path.name)
    scanner.text("docker history --no-trunc", history)
    scanner.text("docker inspect", inspect)
    with tarfile.open(saved) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    layers = [m for m in members if m.name.endswith("layer.tar")]
    configs = [m for m in members if m.name.endswith(".json") and "/" not in m.name and m.name != "manifest.json"]
    scanner.file(f"docker save: {len(layers)} layers + {len(configs)} config + manifest, whole archive", saved)
    saved.unlink()  # hundreds of MB: not kept with the test's temp dirs

    counts = scanner.counts()
    pieces = {"what": f"secret pieces searched for ({len(scanner.secrets)} secrets, all their forms, 16 chars)"}
    counts.append({**pieces, "scanned": len(scanner.needles), "found": 0})
    record_table("secrets", counts)

    assert scanner.hits == [], "\n".join(scanner.hits)
    assert len(layers) >= 5 and configs, [m.name for m in members]
    assert all(r["found"] == 0 for r in counts)
    # the scan saw what it should: every command, the smoke run's items, and the junit of a passing run
    assert len(flow.outputs) == 10 and len(flow.failures) == 4 and len(api_tracebacks) == 2
    junit = (work / "smoke.xml").read_text()
    assert 'failures="0"' in junit and "test_example_app_under_load" in junit


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120).stdout


def _python_api_failures(
    monkeypatch, env, store: str, image: str, wrong_password: str, dest: Path
) -> list[tuple[str, str]]:
    """The same failures through the Python API, in this process: message + formatted traceback of each."""
    import modelship
    from modelship.errors import ModelshipError

    for key in [k for k in os.environ if k.startswith(("AZURE_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("AZURE_", "AWS_", "DOCKER_CONFIG", "MODELSHIP_CACHE_DIR")):
            monkeypatch.setenv(key, value)
    out = []
    calls = {
        "modelship.fetch of a missing version": lambda: modelship.fetch(store, dest, version="9.9.9"),
        "modelship.push with a wrong password": lambda: modelship.push(
            image, username=USER, password=wrong_password, quiet=True
        ),
    }
    for name, call in calls.items():
        with pytest.raises(ModelshipError) as info:
            call()
        out.append((name, str(info.value) + "\n" + "".join(traceback.format_exception(info.value))))
    return out


def test_the_scanner_finds_each_form_of_a_secret(tmp_path):
    """The scan above is only worth its zeros if it finds a secret in any of the forms it could take."""
    secret = _fake("PROBE")
    scanner = Scanner({"probe": secret, "user:password": f"{USER}:{secret}"})
    leaks = {
        "raw": f"token={secret};",
        "a 16-char piece": f"...{secret[7:23]}...",
        "URL-quoted in a request line": f'"GET /c?sp=r&sig={quote(secret, safe="")} HTTP/1.1" 200',
        "JSON-escaped": json.dumps({"k": secret}),
        "base64 (a docker config auth)": base64.b64encode(f"{USER}:{secret}".encode()).decode(),
    }
    for what, text in leaks.items():
        scanner.text(what, text)
    scanner.text("clean", f"sig=***&user={USER}")
    blob = tmp_path / "layer.tar"
    blob.write_bytes(secrets.token_bytes(1 << 20) + secret.encode() + secrets.token_bytes(4096))
    scanner.file("a large binary file", blob)
    found = {r["what"]: r["found"] for r in scanner.rows.values()}
    assert found == {**dict.fromkeys(leaks, 1), "clean": 0, "a large binary file": 1}, scanner.hits


def test_sdk_debug_logs_are_masked_at_the_source(caplog):
    """urllib3 logs every request line with its query at DEBUG: importing modelship masks a SAS in them."""
    import logging

    import modelship  # noqa: F401 - importing it installs the filter

    sig = base64.b64encode(secrets.token_bytes(32)).decode()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3.connectionpool").debug(
            '%s://%s:%s "%s %s %s" %s %s',
            "http",
            "127.0.0.1",
            10000,
            "GET",
            f"/c?sp=r&sig={quote(sig)}",
            "HTTP/1.1",
            200,
            0,
        )
    assert "sig=***" in caplog.text and quote(sig) not in caplog.text and sig[:16] not in caplog.text


def test_cli_masks_any_library_log_and_its_own_vv_traceback(tmp_path, capsys, monkeypatch):
    """Records of loggers modelship does not know (any SDK) reach the CLI's handler masked; so does the -vv
    traceback of an error chained to a library exception that carried a SAS URL.

    modelship raises its errors ``from None`` where a cause could hold a URL, so no real path produces such a
    chain today: the fetch is replaced by one raising it (a fake, for defence in depth only)."""
    import logging

    import requests

    from modelship import cli, logs
    from modelship.errors import TransientError

    sig = base64.b64encode(secrets.token_bytes(32)).decode()
    url = f"http://127.0.0.1:1/devstoreaccount1/c/m?sv=2022-11-02&sp=rl&sig={quote(sig)}"

    during: list[logging.Handler] = []

    def leaky_fetch(*args, **kwargs):
        during.extend(logging.getLogger().handlers)
        logging.getLogger("some.sdk.transport").warning("retrying %s after %s", url, "a reset")
        try:
            raise requests.ConnectionError(f"Max retries exceeded with url: {url}")
        except requests.ConnectionError as e:
            raise TransientError("reading az://devstoreaccount1/c/m failed: connection refused") from e

    monkeypatch.setattr("modelship._fetch.fetch", leaky_fetch)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig installs the CLI's own handler on a bare root
    rc = cli.main(["-vv", "fetch", "az://devstoreaccount1/c/m", str(tmp_path / "dest"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Max retries exceeded" in err and "retrying" in err, err[-2000:]
    assert "sig=***" in err and quote(sig) not in err and sig[:16] not in err, err[-2000:]
    assert during and all(logs._FILTER in h.filters for h in during)  # the run's handlers (the CLI's own: gone now)
    assert root.handlers == []
