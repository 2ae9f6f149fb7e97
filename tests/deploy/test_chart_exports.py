"""#13 point 1 in the chart: every process gets the export bucket (GDPR_EXPORT_STORAGE=s3, bucket, endpoint,
region, URL lifetime) from the ConfigMap; credentials come from workload identity (service account
annotations) or, when named, an existing Secret of AWS keys; never from the chart."""

from typing import Any

import helm_python
import pytest

from tests.deploy.manifests import (
    containers,
    deep_set,
    looks_secret,
    named,
    production_values,
    render,
    rendered,
    workloads,
)


def config_data(manifests: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = named(manifests, "ConfigMap", "-config")["data"]
    return data


def app_containers(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (workload["metadata"]["name"], container)
        for workload in workloads(manifests)
        for container in containers(workload)
        if container["name"] != "envoy"
    ]


def test_production_values_send_exports_to_the_bucket_with_the_pods_own_identity() -> None:
    manifests = rendered("production")

    data = config_data(manifests)
    assert {name: data.get(name) for name in data if name.startswith(("GDPR_EXPORT", "AWS_"))} == {
        "GDPR_EXPORT_STORAGE": "s3",
        "GDPR_EXPORT_BUCKET": "jia-payments-production-gdpr-exports",
        "AWS_S3_REGION_NAME": "eu-central-1",
        "GDPR_EXPORT_URL_TTL_SECONDS": "300",
    }
    account = named(manifests, "ServiceAccount", "jia-payments")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for where, container in app_containers(manifests):
        config_maps = [source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source]
        inline = {entry["name"]: entry.get("value") for entry in container.get("env", [])}
        # Deployments read the ConfigMap; the migration hook (which runs before it exists) has it inline.
        assert config_maps == ["jia-jia-payments-config"] or inline["GDPR_EXPORT_STORAGE"] == "s3", where


def test_default_values_render_an_s3_configuration_too() -> None:
    data = config_data(rendered("default"))

    assert data["GDPR_EXPORT_STORAGE"] == "s3"
    assert data["GDPR_EXPORT_BUCKET"]
    assert "AWS_S3_ENDPOINT_URL" not in data  # AWS S3 itself


def test_an_s3_compatible_store_and_a_secret_of_aws_keys_reach_every_process() -> None:
    values = deep_set(production_values(), "gdprExports.endpointUrl", "https://minio.storage.svc:9000")
    values = deep_set(values, "gdprExports.credentials.existingSecret", "jia-payments-s3")

    manifests = render(values)

    assert config_data(manifests)["AWS_S3_ENDPOINT_URL"] == "https://minio.storage.svc:9000"
    assert not looks_secret("AWS_S3_ENDPOINT_URL")
    assert looks_secret("AWS_SECRET_ACCESS_KEY")
    for where, container in app_containers(manifests):
        assert {"secretRef": {"name": "jia-payments-s3"}} in container["envFrom"], where


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gdprExports.bucket", ""),
        ("gdprExports.bucket", "Not_A_Bucket"),
        ("gdprExports.endpointUrl", "minio:9000"),
        ("gdprExports.urlTtlSeconds", 0),
        ("gdprExports.urlTtlSeconds", 604801),
        ("config.extraEnv", {"GDPR_EXPORT_STORAGE": "local"}),
    ],
)
def test_the_schema_refuses_a_broken_export_store(key: str, value: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(production_values(), key, value))
