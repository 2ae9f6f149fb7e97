"""PostgreSQL connections (issue #13, point 7): the chart computes the worst case its release can open and
refuses to render above `database.maxConnections`. The worst case is recomputed here from what the chart
renders (Deployments, HPAs, rollout strategies, the processes' settings), not from the values."""

import math
from typing import Any

import helm_python
import pytest

from tests.deploy.manifests import (
    Manifest,
    deep_set,
    env_value,
    named,
    of_kind,
    pod_spec,
    production_values,
    render,
    rendered,
)
from tests.deploy.test_helm_chart import chart_default_values

VALUE_SETS = ["default", "production"]


def _surge(deployment: Manifest, pods: int) -> int:
    strategy = deployment["spec"]["strategy"]
    if strategy["type"] == "Recreate":
        return 0  # the old pod is gone before the new one starts
    surge = strategy["rollingUpdate"]["maxSurge"]
    return math.ceil(pods * int(surge[:-1]) / 100) if str(surge).endswith("%") else int(surge)


def _connections_per_pod(deployment: Manifest) -> int:
    (app,) = [c for c in pod_spec(deployment)["containers"] if c["name"] != "envoy"]
    kind = app["args"][0]
    if kind == "web":  # one pool per gunicorn process, shared by its threads
        return int(env_value(app, "GUNICORN_WORKERS")) * int(env_value(app, "DATABASE_POOL_MAX_SIZE"))
    if kind == "worker":  # one persistent connection per prefork child
        return int(env_value(app, "WORKER_CONCURRENCY"))
    assert kind == "beat", kind
    return 1


def worst_case(manifests: list[Manifest]) -> dict[str, int]:
    """Connections per workload with every Deployment at its largest, mid-rollout, plus the hook Jobs."""
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(manifests, "HorizontalPodAutoscaler")}
    counts = {}
    for deployment in of_kind(manifests, "Deployment"):
        name = deployment["metadata"]["name"]
        hpa = hpas.get(name)
        pods = hpa["spec"]["maxReplicas"] if hpa else deployment["spec"]["replicas"]
        counts[name] = (pods + _surge(deployment, pods)) * _connections_per_pod(deployment)
    for job in of_kind(manifests, "Job"):
        counts[job["metadata"]["name"]] = 1  # init containers run one after the other
    return counts


def budget(manifests: list[Manifest]) -> int:
    return int(named(manifests, "ConfigMap", "-config")["metadata"]["annotations"]["jia-payments/database-connections"])


@pytest.mark.parametrize(("values_name", "limit"), [("default", 100), ("production", 200)])
def test_the_charts_worst_case_is_what_its_objects_can_open_and_fits_the_limit(values_name: str, limit: int) -> None:
    manifests = rendered(values_name)
    counts = worst_case(manifests)

    assert budget(manifests) == sum(counts.values()), counts
    assert sum(counts.values()) <= limit
    values = chart_default_values() if values_name == "default" else production_values()
    assert values["database"]["maxConnections"] == limit


def test_the_production_example_as_it_was_would_not_render() -> None:
    # given the production example before the budget (web up to 20 pods, webhooks workers up to 12) on a
    # PostgreSQL with its default max_connections
    values = deep_set(production_values(), "web.autoscaling.maxReplicas", 20)
    values = deep_set(values, "workers.groups.webhooks.autoscaling.maxReplicas", 12)
    values = deep_set(values, "database.maxConnections", 100)

    with pytest.raises(helm_python.HelmRenderError) as refused:
        render(values)

    message = str(refused.value)
    assert "274 PostgreSQL connections, over database.maxConnections (100)" in message
    assert "web 25 pods (20 + 5 surge) x 3 processes x pool 2 = 150" in message
    assert "worker-webhooks 13 pods (incl. 1 surge) x concurrency 8 = 104" in message


@pytest.mark.parametrize(
    ("key", "value", "extra"),
    [
        ("database.pool.maxSize", 3, 3 * 15 * 1),  # 15 web pods x 3 processes x 1 more each
        ("web.gunicorn.workers", 4, 2 * 15 * 1),  # 15 web pods x 1 more process x pool 2
        ("workers.groups.outbox.replicas", 3, 4),  # 1 more outbox pod x concurrency 4
        ("web.autoscaling.enabled", False, -(2 * 3 * 15) + 2 * 3 * (2 + 1)),  # 2 replicas (+1 surge) instead
    ],
)
def test_every_input_of_the_sum_moves_it(key: str, value: Any, extra: int) -> None:
    before = budget(rendered("production"))
    manifests = render(deep_set(deep_set(production_values(), "database.maxConnections", 1000), key, value))

    assert budget(manifests) == before + extra == sum(worst_case(manifests).values())


def test_only_web_pods_pool_their_connections() -> None:
    manifests = rendered("production")
    for deployment in of_kind(manifests, "Deployment"):
        (app,) = [c for c in pod_spec(deployment)["containers"] if c["name"] != "envoy"]
        names = {entry["name"] for entry in app.get("env", [])}
        assert ("DATABASE_POOL_MAX_SIZE" in names) == (app["args"] == ["web"]), deployment["metadata"]["name"]


def test_the_pool_size_is_validated() -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(chart_default_values(), "database.pool.maxSize", 0))
    with pytest.raises(helm_python.HelmValuesError):
        render(deep_set(chart_default_values(), "database.maxConnections", 0))
