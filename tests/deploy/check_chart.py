"""`python -m tests.deploy.check_chart [--output DIR]`: lint the Helm chart (strict) and validate everything
it renders, with default and production-like values, against Kubernetes' schemas. Offline; for `make lint`.

--output DIR also writes each rendering to DIR/<values>.yaml, for review or `kubectl diff -f`.
"""

import argparse
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml

from tests.deploy.manifests import CHART_DIR, KUBERNETES_VERSIONS, production_values, render

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def problems(output: Path | None) -> list[str]:
    found: list[str] = []
    for name, values in (("default", None), ("production", production_values())):
        report = helm_python.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBERNETES_VERSIONS[0]}.0")
        found += [f"{name}: lint: {m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
        found += [f"{name}: lint: {error}" for error in report["errors"]]
        manifests = render(values)
        for manifest in manifests:
            if manifest["kind"] in CRD_KINDS:
                continue
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(manifest, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    where = f"{manifest['kind']}/{manifest['metadata']['name']}"
                    found.append(f"{name}: {where}: Kubernetes {version}: {exc.message}")
        if output:
            output.mkdir(parents=True, exist_ok=True)
            (output / f"{name}.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
        print(f"{name}: {len(manifests)} objects rendered and validated against Kubernetes {KUBERNETES_VERSIONS}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, help="write the renderings to this directory")
    found = problems(parser.parse_args().output)
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
