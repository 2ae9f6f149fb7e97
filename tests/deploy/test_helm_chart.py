"""The Helm chart, rendered offline with default and production-like values: valid Kubernetes objects,
locked-down pods, real probes, graceful shutdowns, secrets only by reference, and values that refuse
`latest`. Plain pytest: no Django, no database, no cluster."""

import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from payments_project import heartbeat
from tasks.queues import TaskQueue
from tests.deploy.manifests import (
    CHART_DIR,
    KUBERNETES_VERSIONS,
    Manifest,
    component,
    containers,
    deep_set,
    env_value,
    looks_secret,
    named,
    of_kind,
    pod_spec,
    production_values,
    render,
    rendered,
    workloads,
)

VALUE_SETS = ["default", "production"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # not in Kubernetes' own schemas; checked structurally below


def chart_default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def worker_deployments(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in of_kind(manifests, "Deployment") if component(m) == "worker"]


def web_container(web: Manifest) -> dict[str, Any]:
    """The app's container of the web pod (the Envoy sidecar, when enabled, is the other)."""
    (container,) = [c for c in pod_spec(web)["containers"] if c["name"] == "web"]
    return container


def selects(selector: dict[str, str], workload: Manifest) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


# --- lint and schema validation ----------------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_the_chart_lints_clean_in_strict_mode(values_name: str) -> None:
    values = None if values_name == "default" else production_values()
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBERNETES_VERSIONS[0]}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors; info is fine
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_every_object_is_valid_for_the_kubernetes_api(values_name: str, kubernetes_version: str) -> None:
    manifests = [m for m in rendered(values_name) if m["kind"] not in CRD_KINDS]
    assert len(manifests) >= 15
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)


def test_the_validator_is_not_vacuous() -> None:
    # given a rendered Deployment with a misspelt field
    deployment = yaml.safe_load(yaml.safe_dump(named(rendered("default"), "Deployment", "-web")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    # then strict validation rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_service_monitors_are_off_by_default_and_point_at_real_ports_when_enabled() -> None:
    assert of_kind(rendered("default"), "ServiceMonitor") == []

    manifests = rendered("production")
    monitors = of_kind(manifests, "ServiceMonitor")
    assert len(monitors) == 2
    services = of_kind(manifests, "Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, monitor["metadata"]["name"]
        port_names = {port["name"] for port in matching[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


# --- image tags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values_name", "tag"), [("default", "0.1.0"), ("production", "1.4.2")])
def test_every_container_runs_an_explicitly_tagged_image(values_name: str, tag: str) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart:
        assert chart.metadata["appVersion"] == "0.1.0"  # the default tag
    for workload in workloads(rendered(values_name)):
        for container in containers(workload):
            image = container["image"]
            if container["name"] == "envoy":  # the optional sidecar: its own image, pinned by tag and digest
                assert re.fullmatch(r"envoyproxy/envoy:v[0-9.]+@sha256:[0-9a-f]{64}", image), image
                continue
            assert image.endswith(f":{tag}"), image
            assert "latest" not in image.lower()


# An empty beat.imageTag means "the release's image", so only image.tag is tried empty.
@pytest.mark.parametrize(
    ("key", "tag"),
    [("image.tag", "")]
    + [(key, tag) for key in ("image.tag", "beat.imageTag") for tag in ("latest", "LATEST", "Latest", "two words")],
)
def test_rendering_refuses_latest_and_empty_tags(key: str, tag: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=r"/image/tag|/beat/imageTag"):
        render(deep_set(chart_default_values(), key, tag))


def test_an_image_digest_pins_every_container() -> None:
    digest = "sha256:" + "ab" * 32
    manifests = render(deep_set(chart_default_values(), "image.digest", digest))
    for workload in workloads(manifests):
        for container in containers(workload):
            assert container["image"] == f"ghcr.io/jia/jia-payments@{digest}"


# --- the schema refuses insecure values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("securityContext.readOnlyRootFilesystem", False),
        ("securityContext.allowPrivilegeEscalation", True),
        ("securityContext.runAsNonRoot", False),
        ("securityContext.privileged", True),
        ("securityContext.capabilities.drop", ["NET_RAW"]),
        ("securityContext.capabilities.add", ["NET_ADMIN"]),
        ("podSecurityContext.runAsUser", 0),
        ("config.allowedHosts", ["*"]),
        ("config.extraEnv", {"STRIPE_API_KEY": "sk_live_x"}),
        ("config.extraEnv", {"DATABASE_URL": "postgres://u:p@db/payments"}),
        ("config.extraEnv", {"MY_PASSWORD": "x"}),
        ("config.extraEnv", {"DJANGO_ENV": "development"}),
        ("config.serviceAuthMode", "xfcc"),  # without a trust bundle
        ("secrets.existingSecret", ""),
        ("web.port", 80),
        ("web.resources", {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": None}),
        ("workers.defaults.resources.limits", None),
        ("workers.groups.webhooks.queues", ["webhook"]),
        ("workers.groups.webhooks.concurrency", 0),
        ("workers.taskTimeLimitSeconds", 0),
        ("beat.replicas", 2),
    ],
)
def test_the_schema_refuses_insecure_or_broken_values(key: str, value: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(chart_default_values(), key, value))


# --- pods: security, resources, /tmp -----------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_every_pod_and_container_is_locked_down(values_name: str) -> None:
    pods = workloads(rendered(values_name))
    assert {component(w) for w in pods} == {"web", "worker", "beat", "migrate"}
    for workload in pods:
        spec = pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] == 10001  # the Dockerfile's USER
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp and tmp["emptyDir"]["sizeLimit"]
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security.get("privileged", False) is False, where
            assert "ALL" in security["capabilities"]["drop"], where
            assert not security["capabilities"].get("add"), where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{where} {kind}"


def test_the_service_account_carries_no_token() -> None:
    account = named(rendered("default"), "ServiceAccount", "jia-payments")
    assert account["automountServiceAccountToken"] is False


# --- probes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_web_has_startup_liveness_and_readiness_probes(values_name: str) -> None:
    web = named(rendered(values_name), "Deployment", "-web")
    container = web_container(web)
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # kubelet sends Host: <pod IP>; Django must accept it
    assert env_value(container, "ALLOWED_HOSTS").endswith(",$(POD_IP)")


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_beat_is_pinged_on_its_own_node(values_name: str) -> None:
    (container,) = pod_spec(named(rendered(values_name), "Deployment", "-beat"))["containers"]
    for probe in ("startupProbe", "livenessProbe"):
        command = " ".join(container[probe]["exec"]["command"])
        assert "celery -A payments_project inspect ping" in command
        assert '--destination "celerybeat@${HOSTNAME}"' in command
        # the probe's own process loads the app: Python start-up plus the ping's 10 s
        assert container[probe]["timeoutSeconds"] >= 20
    assert "readinessProbe" not in container  # no Service routes to it


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_a_worker_is_live_by_its_heartbeat_which_a_broker_outage_does_not_stop(values_name: str) -> None:
    for worker in worker_deployments(rendered(values_name)):
        (container,) = pod_spec(worker)["containers"]
        for probe in ("startupProbe", "livenessProbe"):
            command = " ".join(container[probe]["exec"]["command"])
            # the file the worker touches (the entrypoint's --heartbeat-file), not the broker
            assert "/tmp/worker-heartbeat" in command
            assert "celery" not in command
            max_age = int(re.search(r"-lt (\d+)$", command).group(1))  # type: ignore[union-attr]
            assert max_age >= 3 * heartbeat.HEARTBEAT_SECONDS  # two missed touches are not yet a restart
        liveness = container["livenessProbe"]
        # a wedged event loop is restarted within about 3 minutes
        failing = liveness["failureThreshold"] * liveness["periodSeconds"]
        assert heartbeat.LOOP_STALE_SECONDS + max_age + failing <= 180
        assert "readinessProbe" not in container  # no Service routes to them


# --- graceful shutdown -------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_grace_periods_outlast_in_flight_requests_and_tasks(values_name: str) -> None:
    manifests = rendered(values_name)
    web = named(manifests, "Deployment", "-web")
    container = web_container(web)
    graceful = int(env_value(container, "GUNICORN_GRACEFUL_TIMEOUT"))
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod_spec(web)["terminationGracePeriodSeconds"] > pre_stop + graceful

    config = named(manifests, "ConfigMap", "-config")["data"]
    hard_limit = int(config["CELERY_TASK_TIME_LIMIT"])
    assert hard_limit == 300
    for worker in worker_deployments(manifests):
        assert pod_spec(worker)["terminationGracePeriodSeconds"] > hard_limit


# --- workloads -----------------------------------------------------------------------------------------


def test_beat_is_exactly_one_replica_replaced_by_recreate() -> None:
    for values_name in VALUE_SETS:
        manifests = rendered(values_name)
        beat = named(manifests, "Deployment", "-beat")
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"] == {"type": "Recreate"}
        for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
            assert hpa["spec"]["scaleTargetRef"]["name"] != beat["metadata"]["name"]
        for pdb in of_kind(manifests, "PodDisruptionBudget"):
            assert not selects(pdb["spec"]["selector"]["matchLabels"], beat)


def test_each_worker_group_is_its_own_deployment_and_every_queue_is_consumed() -> None:
    manifests = rendered("default")
    queues_by_group = {
        w["spec"]["template"]["metadata"]["labels"]["jia-payments/worker-group"]: env_value(
            pod_spec(w)["containers"][0], "WORKER_QUEUES"
        ).split(",")
        for w in worker_deployments(manifests)
    }
    assert queues_by_group == {
        "webhooks": ["webhooks"],
        "outbox": ["outbox"],
        "background": ["default", "gdpr", "reconciliation"],
    }
    consumed = {queue for queues in queues_by_group.values() for queue in queues}
    assert consumed == {queue.value for queue in TaskQueue}


def test_a_worker_group_overrides_the_defaults_including_false_and_zero() -> None:
    manifests = rendered("production")
    outbox = named(manifests, "Deployment", "-worker-outbox")
    assert outbox["spec"]["replicas"] == 2  # its autoscaling: enabled: false beat the default true
    assert not [h for h in of_kind(manifests, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-outbox")]
    webhooks = named(manifests, "Deployment", "-worker-webhooks")
    (container,) = pod_spec(webhooks)["containers"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}  # one limit overridden
    assert env_value(container, "WORKER_CONCURRENCY") == "8"


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_web_and_every_worker_group_have_a_pdb_and_an_hpa_when_autoscaled(values_name: str) -> None:
    manifests = rendered(values_name)
    scaled = [named(manifests, "Deployment", "-web"), *worker_deployments(manifests)]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(manifests, "HorizontalPodAutoscaler")}
    pdbs = of_kind(manifests, "PodDisruptionBudget")
    for workload in scaled:
        name = workload["metadata"]["name"]
        assert sum(selects(p["spec"]["selector"]["matchLabels"], workload) for p in pdbs) == 1, name
        if name in hpas:
            assert hpas[name]["apiVersion"] == "autoscaling/v2"
            assert "replicas" not in workload["spec"], f"{name}: the HPA owns the replica count"
        else:
            assert workload["spec"]["replicas"] >= 1
    assert named(manifests, "Deployment", "-web")["metadata"]["name"] in hpas
    if values_name == "default":
        assert all(w["metadata"]["name"] in hpas for w in scaled)


def test_a_configuration_change_rolls_the_pods() -> None:
    before = named(rendered("default"), "Deployment", "-web")
    after = named(render(deep_set(chart_default_values(), "config.logLevel", "DEBUG")), "Deployment", "-web")
    key = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


# --- migrations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_migrations_run_first_as_a_pre_install_and_pre_upgrade_hook(values_name: str) -> None:
    job = named(rendered(values_name), "Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    assert [c["args"] for c in spec["initContainers"]] == [["manage", "check", "--deploy"]]
    assert [c["args"] for c in spec["containers"]] == [["migrate"]]
    for container in containers(job):
        # the hook runs before the release's ConfigMap exists: configuration inline, secrets by reference
        assert env_value(container, "DJANGO_ENV") == "production"
        assert [source["secretRef"]["name"] for source in container["envFrom"]]


# --- secrets -------------------------------------------------------------------------------------------


def test_the_secret_name_pattern_covers_every_production_secret() -> None:
    for name in (
        "SECRET_KEY",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "REDIS_URL",
        "JWT_SIGNING_KEY",
        "JWT_VERIFYING_KEY",
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRETS",
        "SENTRY_DSN",
    ):
        assert looks_secret(name), name
    for name in ("ALLOWED_HOSTS", "JWT_ISSUER", "JWT_JWKS_URL", "STRIPE_API_BASE", "SPIFFE_TRUST_BUNDLE"):
        assert not looks_secret(name), name


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_secrets_come_only_from_the_existing_secret(values_name: str) -> None:
    manifests = rendered(values_name)
    existing = "jia-payments" if values_name == "default" else "jia-payments-production"
    assert of_kind(manifests, "Secret") == []
    config_maps = {m["metadata"]["name"] for m in of_kind(manifests, "ConfigMap")}
    for config_map in of_kind(manifests, "ConfigMap"):
        assert [key for key in config_map["data"] if looks_secret(key)] == []
    for workload in workloads(manifests):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            if container["name"] == "envoy":  # the sidecar needs no configuration of ours, secrets least of all
                assert "envFrom" not in container and "env" not in container, where
                continue
            sources = container.get("envFrom", [])
            assert {"secretRef": {"name": existing}} in sources, where
            for source in sources:
                assert source.get("secretRef", {"name": existing})["name"] == existing, where
                assert source.get("configMapRef", {"name": next(iter(config_maps))})["name"] in config_maps, where
            for entry in container.get("env", []):
                if looks_secret(entry["name"]):
                    assert "value" not in entry, f"{where}: {entry['name']} has a literal value"
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == existing, where


# --- network policy ------------------------------------------------------------------------------------


def test_network_policies_default_deny_ingress_and_limit_egress() -> None:
    manifests = rendered("default")
    base = named(manifests, "NetworkPolicy", "jia-payments")
    assert set(base["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert base["spec"]["ingress"] == []
    assert base["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "jia-payments",
        "app.kubernetes.io/instance": "jia",
    }
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in base["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {
        (53, "UDP"),
        (53, "TCP"),
        (5432, "TCP"),
        (5671, "TCP"),
        (5672, "TCP"),
        (6379, "TCP"),
        (443, "TCP"),
    }
    https = next(rule for rule in base["spec"]["egress"] if rule["ports"] == [{"port": 443, "protocol": "TCP"}])
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]  # public HTTPS (Stripe), not the cluster

    web = named(manifests, "NetworkPolicy", "-web")
    assert web["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    assert web["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_network_policies_follow_the_values() -> None:
    manifests = rendered("production")
    web = named(manifests, "NetworkPolicy", "-web")
    sources = web["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources
    base = named(manifests, "NetworkPolicy", "jia-payments")
    postgres = next(rule for rule in base["spec"]["egress"] if rule["ports"][0]["port"] == 5432)
    assert postgres["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]

    values = deep_set(chart_default_values(), "networkPolicy.enabled", False)
    assert of_kind(render(values), "NetworkPolicy") == []


def test_an_app_version_of_latest_is_refused_even_without_a_tag_in_values(tmp_path: Path) -> None:
    # given a copy of the chart whose appVersion (the default tag) is "latest"
    chart = tmp_path / "jia-payments"
    shutil.copytree(CHART_DIR, chart)
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    metadata["appVersion"] = "latest"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata))
    # then it does not render
    with helm_python.Chart.load(chart) as loaded, pytest.raises(helm_python.HelmRenderError, match="latest"):
        loaded.render(None, name="jia", namespace="payments")
