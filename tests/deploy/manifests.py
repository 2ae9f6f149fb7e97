"""Render the Helm chart offline (Helm's own engine through helm-python-sdk) and walk what it renders.

No cluster, no network and no helm binary: `helm_python` binds Helm's Go SDK. It is a hard import, so a
missing renderer fails the tests instead of skipping them.
"""

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "jia-payments"
PRODUCTION_VALUES = CHART_DIR / "ci" / "production-values.yaml"
RELEASE = "jia"
NAMESPACE = "payments"

# Kubernetes versions the manifests must be valid for: the chart's floor (Chart.yaml kubeVersion) and the
# newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", "1.37")

# Environment variable names that hold secrets, or could: these may only ever come from a Secret.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|_KEY_|^KEY$|DSN$|_URL$|_URLS$")
# ..._URL names that are plain configuration, not credentials.
PUBLIC_URL_NAMES = frozenset({"JWT_JWKS_URL", "AWS_S3_ENDPOINT_URL"})

Manifest = dict[str, Any]


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return values


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every object the chart renders with these values (hooks included), as `helm template` would."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


@cache
def _rendered(name: str) -> tuple[Manifest, ...]:
    return tuple(render(None if name == "default" else production_values()))


def rendered(name: str) -> list[Manifest]:
    """The default ("default") or production-like ("production") rendering, rendered once per session."""
    return list(_rendered(name))


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    """The one object of this kind whose name ends with suffix (names are prefixed by the release)."""
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} named *{suffix}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def component(manifest: Manifest) -> str:
    labels: dict[str, str] = manifest["spec"]["template"]["metadata"]["labels"]
    return labels["app.kubernetes.io/component"]


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    """Every object that runs pods: Deployments and Jobs (the migration hook)."""
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest, *, init: bool = True) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def env_value(container: dict[str, Any], name: str) -> str:
    for entry in container.get("env", []):
        if entry["name"] == name:
            value: str = entry["value"]
            return value
    raise AssertionError(f"container {container['name']} sets no {name}")


def looks_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and name not in PUBLIC_URL_NAMES


def deep_set(values: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of values with one dotted key set (like --set), creating maps on the way."""
    copy: dict[str, Any] = yaml.safe_load(yaml.safe_dump(values))
    node = copy
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return copy
