"""The chart's network edge (issue #13, points 2 and 4): TRUSTED_PROXY_COUNT always set, an ingress that
routes only the public surface unless a value opens more, and the optional Envoy sidecar that terminates
mTLS and is the only writer of X-Forwarded-Client-Cert the app believes. Plain pytest: no Django, no cluster."""

import ipaddress
from typing import Any

import helm_python
import pytest
import yaml

from payments_project.settings.base import SERVICE_AUTH_TRUSTED_PEERS
from tests.deploy.manifests import (
    Manifest,
    containers,
    deep_set,
    named,
    of_kind,
    pod_spec,
    production_values,
    render,
    rendered,
)
from tests.deploy.test_helm_chart import chart_default_values

VALUE_SETS = ["default", "production"]


def config(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = named(manifests, "ConfigMap", "-config")["data"]
    return data


def routed(ingress: Manifest, path: str) -> bool:
    """Whether a request for `path` reaches the Service, by Kubernetes' Prefix rule (whole path elements)."""
    wanted = [part for part in path.split("/") if part]
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            assert entry["pathType"] == "Prefix"
            prefix = [part for part in entry["path"].split("/") if part]
            if wanted[: len(prefix)] == prefix:
                return True
    return False


def envoy_config(manifests: list[Manifest]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(named(manifests, "ConfigMap", "-envoy")["data"]["envoy.yaml"])
    return loaded


def connection_manager(envoy: dict[str, Any]) -> dict[str, Any]:
    (listener,) = envoy["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    assert manager["name"] == "envoy.filters.network.http_connection_manager"
    typed: dict[str, Any] = manager["typed_config"]
    return typed


# --- TRUSTED_PROXY_COUNT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_the_chart_always_sets_trusted_proxy_count(values_name: str) -> None:
    manifests = rendered(values_name)

    assert config(manifests)["TRUSTED_PROXY_COUNT"] == "1"
    migrate = named(manifests, "Job", "-migrate")  # the hook inlines the same configuration
    for container in containers(migrate):
        assert {"name": "TRUSTED_PROXY_COUNT", "value": "1"} in container["env"]


def test_trusted_proxy_count_follows_the_values_and_cannot_be_left_out() -> None:
    values = chart_default_values()

    assert config(render(deep_set(values, "config.trustedProxyCount", 2)))["TRUSTED_PROXY_COUNT"] == "2"
    assert config(render(deep_set(values, "config.trustedProxyCount", 0)))["TRUSTED_PROXY_COUNT"] == "0"
    with pytest.raises(helm_python.HelmValuesError, match="trustedProxyCount"):
        render(deep_set(values, "config.trustedProxyCount", None))  # null removes a default, as --set does
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(chart_default_values(), "config.trustedProxyCount", -1))


# --- the ingress ---------------------------------------------------------------------------------------------------


def test_there_is_no_ingress_unless_enabled() -> None:
    assert of_kind(rendered("default"), "Ingress") == []


def test_the_ingress_routes_only_the_public_surface() -> None:
    ingress = named(rendered("production"), "Ingress", "jia-payments")
    backends = {
        entry["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for entry in rule["http"]["paths"]
    }
    assert backends == {named(rendered("production"), "Service", "-web")["metadata"]["name"]}

    for public in ("/api/v1/plans", "/api/v1/checkout/sessions", "/api/schema/", "/webhooks/stripe/", "/static/x.css"):
        assert routed(ingress, public), public
    for private in ("/internal/v1/whoami", "/metrics", "/admin/", "/admin/login/", "/healthz", "/readyz", "/"):
        assert not routed(ingress, private), private
    assert not routed(ingress, "/apis/x")  # Prefix matches whole path elements


@pytest.mark.parametrize(
    ("value", "path"), [("admin", "/admin/login/"), ("internal", "/internal/v1/x"), ("metrics", "/metrics")]
)
def test_a_value_opens_each_private_route_alone(value: str, path: str) -> None:
    values = deep_set(production_values(), f"ingress.expose.{value}", True)
    ingress = named(render(values), "Ingress", "jia-payments")

    assert routed(ingress, path)
    others = {"admin": "/admin/", "internal": "/internal/v1/x", "metrics": "/metrics"}
    assert [p for name, p in others.items() if name != value and routed(ingress, p)] == []


def test_an_enabled_ingress_needs_a_host() -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(deep_set(chart_default_values(), "ingress.enabled", True), "ingress.hosts", []))


# --- the Envoy sidecar ---------------------------------------------------------------------------------------------


def test_the_sidecar_is_optional_and_off_by_default() -> None:
    manifests = rendered("default")
    web = named(manifests, "Deployment", "-web")

    assert [c["name"] for c in pod_spec(web)["containers"]] == ["web"]
    assert [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-envoy")] == []
    assert [p["name"] for p in named(manifests, "Service", "-web")["spec"]["ports"]] == ["http"]


def test_the_sidecar_sanitizes_and_sets_the_client_certificate_header() -> None:
    manager = connection_manager(envoy_config(rendered("production")))

    # whatever a caller sent is dropped; only the certificate this proxy verified is forwarded
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    assert manager["set_current_client_cert_details"] == {"cert": True, "chain": True, "uri": True}
    # one proxy appends the peer to X-Forwarded-For, matching TRUSTED_PROXY_COUNT=1
    assert manager["use_remote_address"] is True
    assert config(rendered("production"))["TRUSTED_PROXY_COUNT"] == "1"


def test_the_sidecar_requires_a_client_certificate_of_our_trust_domain_and_serves_our_svid() -> None:
    manifests = rendered("production")
    envoy = envoy_config(manifests)
    (listener,) = envoy["static_resources"]["listeners"]
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]

    assert tls["require_client_certificate"] is True
    context = tls["common_tls_context"]
    validation = context["combined_validation_context"]
    trust_domain = config(manifests)["SPIFFE_TRUST_DOMAIN"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}
    ]
    assert validation["validation_context_sds_secret_config"]["name"] == f"spiffe://{trust_domain}"
    # the SVID Envoy presents is the one it names in By=: the app's SERVICE_SPIFFE_ID
    (svid,) = context["tls_certificate_sds_secret_configs"]
    assert svid["name"] == config(manifests)["SERVICE_SPIFFE_ID"]
    assert svid["name"].startswith(f"spiffe://{trust_domain}/ns/payments/sa/")


def test_the_sidecar_forwards_only_internal_routes_to_the_app_on_loopback() -> None:
    manifests = rendered("production")
    envoy = envoy_config(manifests)
    routes = connection_manager(envoy)["route_config"]["virtual_hosts"][0]["routes"]

    assert [route["match"] for route in routes] == [{"prefix": "/internal/"}]
    (app,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == routes[0]["route"]["cluster"]]
    address = app["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    web = named(manifests, "Deployment", "-web")
    (app_container,) = [c for c in pod_spec(web)["containers"] if c["name"] == "web"]
    assert address == {"address": "127.0.0.1", "port_value": app_container["ports"][0]["containerPort"]}
    # loopback is what the app believes by default (SERVICE_AUTH_TRUSTED_PEERS)
    assert any(ipaddress.ip_address("127.0.0.1") in network for network in SERVICE_AUTH_TRUSTED_PEERS)
    assert "SERVICE_AUTH_TRUSTED_PEERS" not in config(manifests)


def test_the_sidecar_gets_its_certificates_from_the_workload_api_and_nothing_of_ours() -> None:
    manifests = rendered("production")
    envoy = envoy_config(manifests)
    web = named(manifests, "Deployment", "-web")
    (sidecar,) = [c for c in pod_spec(web)["containers"] if c["name"] == "envoy"]

    (agent,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "spire_agent"]
    socket = agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert socket.startswith(mounts["spiffe-workload-api"] + "/")
    volumes = {v["name"]: v for v in pod_spec(web)["volumes"]}
    assert volumes["spiffe-workload-api"]["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
    assert volumes["envoy-config"]["configMap"]["name"].endswith("-envoy")
    assert "envFrom" not in sidecar and "env" not in sidecar  # no secret, no configuration of the app
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_sidecars_port_is_on_the_service_and_the_network_policy() -> None:
    manifests = rendered("production")
    ports = {p["name"]: p for p in named(manifests, "Service", "-web")["spec"]["ports"]}
    assert ports["mtls"]["targetPort"] == "mtls"
    policy = named(manifests, "NetworkPolicy", "-web")
    rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(rules) == {"http", "mtls"}
    assert rules["mtls"]["from"] == production_values()["networkPolicy"]["mtlsFrom"]


def test_a_change_to_the_sidecars_configuration_rolls_the_web_pods() -> None:
    before = named(rendered("production"), "Deployment", "-web")["spec"]["template"]["metadata"]["annotations"]
    changed = render(deep_set(production_values(), "envoy.port", 9443))
    after = named(changed, "Deployment", "-web")["spec"]["template"]["metadata"]["annotations"]

    assert before["checksum/envoy"] != after["checksum/envoy"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("envoy.image", "envoyproxy/envoy:v1.38.0"),  # a tag alone can move
        ("envoy.image", "envoyproxy/envoy:latest@sha256:" + "0" * 64),
        ("config.serviceAuthMode", "none"),  # a sidecar for a closed /internal/ is a mistake
        ("config.spiffe.serviceId", "payments"),
    ],
)
def test_the_schema_refuses_an_unpinned_or_pointless_sidecar(key: str, value: str) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(production_values(), key, value))


def test_our_spiffe_id_is_set_with_xfcc_and_can_be_named() -> None:
    assert "SERVICE_SPIFFE_ID" not in config(rendered("default"))  # /internal/ closed
    assert config(rendered("production"))["SERVICE_SPIFFE_ID"] == "spiffe://jia.example/ns/payments/sa/jia-jia-payments"

    named_id = "spiffe://jia.example/workload/payments"
    values = deep_set(production_values(), "config.spiffe.serviceId", named_id)
    manifests = render(values)
    assert config(manifests)["SERVICE_SPIFFE_ID"] == named_id
    assert (
        envoy_config(manifests)["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"][
            "typed_config"
        ]["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"]
        == named_id
    )
