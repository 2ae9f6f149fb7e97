"""The production rehearsal (#13): what the chart runs, run here, then walked like a user would.

The chart is rendered with ci/production-values.yaml; the web, worker and beat containers' environment is
what it renders (the ConfigMap, each container's own env, and the keys of the Secret it names, filled with
test values) on top of the image's ENV. The processes start through scripts/docker-entrypoint.sh (`web`,
`worker`, `beat`), as the unprivileged user `nobody`, with DJANGO_ENV=production, on a code directory they
cannot write (only /tmp is writable), against the real PostgreSQL, RabbitMQ and Redis of `make test`, an S3
server (moto) and Stripe's fake (localstripe). The migration hook's `check --deploy` and `migrate` run first.

What differs from a cluster, and only that, is substituted (SUBSTITUTED): addresses of the services, the
HTTP port, the worker's metrics port, each process's own /tmp folder (pods do not share /tmp), Stripe's
base URL, and a verifying key instead of the identity provider's JWKS URL. One worker consumes every
group's queues (the chart runs one Deployment per group).
"""

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import psycopg
import pytest
import requests
import stripe
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from tests.deploy.manifests import REPO, containers, named, of_kind, rendered
from tests.support.proxy import TcpProxy, free_port
from tests.support.s3 import S3Server, s3_server
from tests.support.stripe_events import signed, stripe_event
from tests.support.stripe_fake import STRIPE_KEY
from tests.support.stripe_setup import customer_with_card
from tests.support.worker import purge

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ENTRYPOINT = REPO / "scripts" / "docker-entrypoint.sh"
BIN = REPO / ".venv" / "bin"
USER = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
# The image's own ENV (Dockerfile), under what the pod adds.
IMAGE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
    "HOME": "/tmp",
    "DJANGO_ENV": "production",
    "PORT": "8000",
}
# Names the chart's Secret must hold (values.yaml, secrets.existingSecret), and the AWS keys of the fallback.
SECRET_KEYS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "JWT_VERIFYING_KEY",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRETS",
    "GDPR_PSEUDONYM_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
WEBHOOK_SECRET = "whsec_rehearsal"
HOST = "payments.jia.example"
FEATURE = "hd"
# What reaches the pods through the ingress: its host, https, the client's address appended.
THROUGH_THE_INGRESS = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


@dataclass
class Rehearsal:
    base: str
    env: dict[str, dict[str, str]]  # per component: web, worker, beat, migrate
    redis: TcpProxy
    s3: S3Server
    sdk: stripe.StripeClient
    signing_key: rsa.RSAPrivateKey
    price_id: str
    started_seconds: float

    def token(self, user_id: uuid.UUID, email: str = "") -> dict[str, str]:
        config = self.env["web"]
        now = int(time.time())
        claims = {"sub": str(user_id), "iat": now, "nbf": now, "exp": now + 600}
        claims |= {"iss": config["JWT_ISSUER"], "aud": config["JWT_AUDIENCE"]}
        if email:
            claims |= {"email": email, "email_verified": True}
        return {"Authorization": f"Bearer {jwt.encode(claims, self.signing_key, algorithm='RS256')}"}

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(
            f"{self.base}{path}", headers=THROUGH_THE_INGRESS | headers, timeout=15, allow_redirects=False
        )

    def post(self, path: str, body: bytes = b"", **headers: str) -> requests.Response:
        headers = THROUGH_THE_INGRESS | {"Content-Type": "application/json"} | headers
        return requests.post(f"{self.base}{path}", data=body, headers=headers, timeout=15, allow_redirects=False)


def wait_for(condition: Any, *, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.2)


# --- the environment the chart renders ----------------------------------------------------------------


def container_env(component: str, secret: dict[str, str], tmp: Path) -> dict[str, str]:
    """The image's ENV, then the container's envFrom (the Secret, the ConfigMap) and env, as the kubelet
    composes them; `$(POD_IP)` and fieldRefs are this machine's loopback. Paths under /tmp move to this
    process's own folder of /tmp (an emptyDir per pod)."""
    manifests = rendered("production")
    config = named(manifests, "ConfigMap", "-config")["data"]
    workload = next(
        w
        for w in of_kind(manifests, "Deployment") + of_kind(manifests, "Job")
        if w["metadata"]["name"].endswith(f"-{component}")
    )
    container = next(c for c in containers(workload, init=False) if c["name"] != "envoy")
    env = dict(IMAGE_ENV)
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env |= secret
        elif "configMapRef" in source:
            env |= config
    for entry in container.get("env", []):
        value = entry.get("value", "127.0.0.1")  # valueFrom: the pod's IP
        env[entry["name"]] = value.replace("$(POD_IP)", "127.0.0.1")
    own_tmp = tmp / component
    own_tmp.mkdir(mode=0o777)
    own_tmp.chmod(0o777)
    for name, value in env.items():
        if value.startswith("/tmp/"):
            env[name] = str(own_tmp / value.removeprefix("/tmp/"))
    return env


def runtime_for_nobody(tmp: Path) -> Path:
    """A bin folder with python, gunicorn and celery that `nobody` can run: the project's .venv when its
    interpreter is reachable (in the image it is /usr/local), else a virtualenv of the system's Python of
    the same minor version that reads the .venv's packages (pyenv keeps its interpreters under /root)."""
    if run_as_nobody_plain(["/bin/sh", "-c", f"{BIN}/python -c pass"]).returncode == 0:
        return BIN
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    assert system.exists(), f"{BIN}/python is not executable by nobody, and there is no {system}"
    venv = tmp / "venv"
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = venv / "lib" / system.name / "site-packages"
    packages = (REPO / ".venv" / "lib" / system.name / "site-packages").resolve()
    (site / "jia-payments-venv.pth").write_text(f"{packages}\n")
    for script in ("gunicorn", "celery"):
        text = (BIN / script).read_text().split("\n", 1)[1]
        (venv / "bin" / script).write_text(f"#!{venv}/bin/python\n{text}")
        (venv / "bin" / script).chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(venv)], check=True)
    return venv / "bin"


def run_as_nobody_plain(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*USER, *command], capture_output=True, text=True, timeout=60, check=False)


def substituted(env: dict[str, str], *, port: int, stripe_base: str, s3: S3Server, bin_dir: Path) -> dict[str, str]:
    """SUBSTITUTED: what a cluster provides differently from this machine."""
    env = dict(env)
    env.pop("JWT_JWKS_URL", None)  # the Secret's JWT_VERIFYING_KEY instead of the identity provider's JWKS
    env |= {
        "PORT": str(port),
        "STRIPE_API_BASE": stripe_base,
        "AWS_S3_ENDPOINT_URL": s3.endpoint_url,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
    }
    if "CELERY_WORKER_METRICS_PORT" in env:
        env["CELERY_WORKER_METRICS_PORT"] = str(free_port())
    return env


def _server_url(database: str) -> str:
    parts = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jia_payments"))
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_create(name: str) -> str:
    """A database of the rehearsal's own on the test server, made afresh; its URL."""
    database_drop(name)
    with psycopg.connect(_server_url("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return _server_url(name)


def database_drop(name: str) -> None:
    with psycopg.connect(_server_url("postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- processes ----------------------------------------------------------------------------------------


def run_as_nobody(args: list[str], env: dict[str, str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*USER, "/bin/sh", str(ENTRYPOINT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def started(commands: dict[str, dict[str, str]]) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each entrypoint command (name: env) as nobody in its own process group; afterwards every group gets
    SIGTERM at once (graceful shutdowns overlap, as in a cluster), and whatever is left of it SIGKILL."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    try:
        for name, env in commands.items():
            log = open(f"/tmp/rehearsal-{name}.log", "wb")  # noqa: SIM115 - open for the process's life
            logs.append(log)
            processes[name] = subprocess.Popen(
                [*USER, "/bin/sh", str(ENTRYPOINT), name],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield processes
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (prefork children)
            process.wait()
        for log in logs:
            log.close()


def alive(process: subprocess.Popen[bytes], name: str) -> None:
    if process.poll() is not None:
        raise AssertionError(f"{name} exited with {process.returncode}; see /tmp/rehearsal-{name}.log")


# --- the rehearsal ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rehearsal(localstripe: str) -> Iterator[Rehearsal]:
    tmp = Path(tempfile.mkdtemp(prefix="jia-rehearsal-", dir="/tmp"))  # each process's /tmp folder is in here
    tmp.chmod(0o755)
    database = f"{settings.DATABASES['default']['NAME']}_rehearsal"[-60:]
    try:
        with rehearsed(localstripe, tmp, database) as walked:
            yield walked
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for leftover in Path("/tmp").glob("celerybeat-schedule*"):  # beat's state file (the entrypoint's path)
            if leftover.owner() == "nobody":
                leftover.unlink(missing_ok=True)
        database_drop(database)


@contextlib.contextmanager
def rehearsed(localstripe: str, tmp: Path, database: str) -> Iterator[Rehearsal]:
    began = time.monotonic()
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sdk = stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": localstripe}, http_client=stripe.RequestsClient(timeout=5)
    )
    redis = urlsplit(settings.REDIS_URL)
    with s3_server() as s3, TcpProxy(redis.port or 6379, redis.hostname or "127.0.0.1") as redis_proxy:
        secret = {
            "SECRET_KEY": secrets.token_urlsafe(64),
            "DATABASE_URL": database_create(database),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "REDIS_URL": urlunsplit(redis._replace(netloc=f"127.0.0.1:{redis_proxy.port}")),
            "JWT_VERIFYING_KEY": public_pem.decode(),
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "GDPR_PSEUDONYM_KEY": secrets.token_urlsafe(32),
            "AWS_ACCESS_KEY_ID": s3.env()["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3.env()["AWS_SECRET_ACCESS_KEY"],
        }
        assert set(secret) == set(SECRET_KEYS)
        port = free_port()
        bin_dir = runtime_for_nobody(tmp)
        env = {
            component: substituted(
                container_env(component, secret, tmp), port=port, stripe_base=localstripe, s3=s3, bin_dir=bin_dir
            )
            for component in ("web", "worker-background", "beat", "migrate")
        }
        env["worker"] = env.pop("worker-background")
        # One worker node for every group's queues, named like the pod would be.
        env["worker"]["WORKER_QUEUES"] = "webhooks,outbox,default,gdpr,reconciliation"
        for component, hostname in (("web", "web-0"), ("worker", "worker-0"), ("beat", "beat-0")):
            env[component]["HOSTNAME"] = f"rehearsal-{hostname}"
        s3_bucket = env["web"]["GDPR_EXPORT_BUCKET"]
        s3.client().create_bucket(Bucket=s3_bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        s3 = S3Server(endpoint_url=s3.endpoint_url, bucket=s3_bucket)

        # The code is not the unprivileged user's to change.
        assert (
            run_as_nobody(["sh", "-c", f'test -w "{REPO}" || test -w "{REPO}/payments_project"'], env["web"]).returncode
            != 0
        )

        # The migration hook: the guard and Django's deployment checks, then the schema; then the catalog.
        for args in (["manage", "check", "--deploy"], ["migrate"]):
            done = run_as_nobody(args, env["migrate"])
            assert done.returncode == 0, done.stdout + done.stderr
        price_id = f"price_{uuid.uuid4().hex[:12]}"
        catalog = tmp / "catalog.json"
        catalog.write_text(
            json.dumps(
                {
                    "features": [{"key": FEATURE, "name": "HD video"}],
                    "plans": [
                        {
                            "code": "premium",
                            "name": "Premium",
                            "features": [FEATURE],
                            "prices": [
                                {
                                    "stripe_price_id": price_id,
                                    "currency": "eur",
                                    "unit_amount": 999,
                                    "interval": "month",
                                }
                            ],
                        }
                    ],
                }
            )
        )
        catalog.chmod(0o644)
        imported = run_as_nobody(["manage", "import_catalog", str(catalog)], env["migrate"])
        assert imported.returncode == 0, imported.stdout + imported.stderr
        product = sdk.v1.products.create(params={"name": "Premium"})  # the same price at Stripe
        plan = {"id": price_id, "amount": 999, "currency": "eur", "interval": "month", "product": product.id}
        sdk.v1.plans.create(params=plan)

        purge(["webhooks", "outbox", "default", "gdpr", "reconciliation"])  # nothing of earlier tests
        with started({name: env[name] for name in ("web", "worker", "beat")}) as processes:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                for name, process in processes.items():
                    alive(process, name)
                ready = requests.get(f"{base}/readyz", headers={"Host": HOST}, timeout=2).status_code == 200
                from payments_project.celery import app

                return ready and bool(app.control.ping(destination=["celery@rehearsal-worker-0"], timeout=0.5))

            wait_for(up, timeout=90, what="web, worker and beat")
            yield Rehearsal(
                base=base,
                env=env,
                redis=redis_proxy,
                s3=s3,
                sdk=sdk,
                signing_key=signing_key,
                price_id=price_id,
                started_seconds=time.monotonic() - began,
            )
            for name, process in processes.items():
                alive(process, name)  # nothing fell over during the walk


def test_the_processes_run_unprivileged_in_production_and_are_ready(rehearsal: Rehearsal) -> None:
    response = rehearsal.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "cache": "ok", "broker": "ok"}
    owners = subprocess.run(
        ["ps", "-ww", "-o", "user=,args=", "-u", "nobody"], capture_output=True, text=True, check=True
    )
    for what in (
        "gunicorn payments_project.wsgi",
        "celery -A payments_project worker",
        "celery -A payments_project beat",
    ):
        assert what in owners.stdout, owners.stdout
    print(f"rehearsal started (migrations, catalog, web, worker, beat) in {rehearsal.started_seconds:.1f}s")


def subscribe(rehearsal: Rehearsal, user_id: uuid.UUID, email: str) -> tuple[str, str]:
    """At Stripe: a customer with a card and a subscription to the catalog's price; then Stripe's signed
    webhook about it, delivered through the ingress. Returns (customer id, subscription id)."""
    sdk = rehearsal.sdk
    customer = customer_with_card(sdk, email=email, metadata={"user_id": str(user_id)})
    subscription = sdk.v1.subscriptions.create(
        params={
            "customer": customer["id"],
            "items": [{"plan": rehearsal.price_id}],
            "metadata": {"user_id": str(user_id)},
        }
    ).to_dict()
    now = int(time.time())
    body = {
        "id": subscription["id"],
        "object": "subscription",
        "customer": customer["id"],
        "status": "active",
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "metadata": {"user_id": str(user_id)},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{subscription['id']}",
                    "price": {"id": rehearsal.price_id},
                    "current_period_start": now - 60,
                    "current_period_end": now + 30 * 86400,
                }
            ],
        },
    }
    event = json.dumps(stripe_event("customer.subscription.created", body)).encode()
    delivered = rehearsal.post("/webhooks/stripe/", event, **{"Stripe-Signature": signed(event, secret=WEBHOOK_SECRET)})
    assert delivered.status_code == 200, delivered.text
    return customer["id"], subscription["id"]


def entitled(rehearsal: Rehearsal, user_id: uuid.UUID) -> bool:
    response = rehearsal.get(f"/api/v1/entitlements/{FEATURE}", **rehearsal.token(user_id))
    assert response.status_code == 200, response.text
    return bool(response.json()["entitled"])


def test_a_signed_webhook_grants_the_entitlement(rehearsal: Rehearsal) -> None:
    user_id = uuid.uuid4()
    assert not entitled(rehearsal, user_id)

    subscribe(rehearsal, user_id, f"{user_id.hex[:8]}@example.com")

    wait_for(lambda: entitled(rehearsal, user_id), timeout=60, what="the entitlement")


def test_an_export_is_built_by_the_worker_and_downloaded_through_its_presigned_url(rehearsal: Rehearsal) -> None:
    user_id = uuid.uuid4()
    _, subscription_id = subscribe(rehearsal, user_id, f"{user_id.hex[:8]}@example.com")
    wait_for(lambda: entitled(rehearsal, user_id), timeout=60, what="the entitlement")
    me = rehearsal.token(user_id)

    created = rehearsal.post("/api/v1/gdpr/exports", **me)
    assert created.status_code == 202, created.text
    export = created.json()["id"]
    wait_for(
        lambda: rehearsal.get(f"/api/v1/gdpr/exports/{export}", **me).json()["status"] == "completed",
        timeout=90,
        what="the export",
    )
    assert f"{export}.zip" in rehearsal.s3.keys()  # noqa: SIM118 - a list of the bucket's keys
    assert rehearsal.get(f"/api/v1/gdpr/exports/{export}/download", **rehearsal.token(uuid.uuid4())).status_code == 404
    download = rehearsal.get(f"/api/v1/gdpr/exports/{export}/download", **me)

    assert download.status_code == 302
    fetched = requests.get(download.headers["Location"], timeout=15)  # the object store, no credentials of ours
    assert fetched.status_code == 200
    with zipfile.ZipFile(io.BytesIO(fetched.content)) as archive:
        assert subscription_id in archive.read("data.json").decode()


def test_an_erasure_completes(rehearsal: Rehearsal) -> None:
    user_id = uuid.uuid4()
    email = f"{user_id.hex[:8]}@example.com"
    customer_id, _ = subscribe(rehearsal, user_id, email)
    wait_for(lambda: entitled(rehearsal, user_id), timeout=60, what="the entitlement")
    me = rehearsal.token(user_id, email)

    created = rehearsal.post("/api/v1/gdpr/erasure", **me)
    assert created.status_code == 202, created.text
    erasure = created.json()["id"]

    status = wait_for(
        lambda: (
            (s := rehearsal.get(f"/api/v1/gdpr/erasure/{erasure}", **me).json()["status"]) in ("completed", "failed")
            and s
        ),
        timeout=120,
        what="the erasure",
    )
    assert status == "completed"
    assert not entitled(rehearsal, user_id)
    with pytest.raises(stripe.InvalidRequestError):  # the customer is gone at Stripe
        rehearsal.sdk.v1.customers.retrieve(customer_id)


def test_readiness_stays_200_while_redis_is_unreachable(rehearsal: Rehearsal) -> None:
    rehearsal.redis.cut()
    try:
        responses = [rehearsal.get("/readyz") for _ in range(3)]
    finally:
        rehearsal.redis.restore()

    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[-1].json()["database"] == "ok"
    assert responses[-1].json()["cache"] == "down"
