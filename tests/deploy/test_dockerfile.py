"""The Dockerfile: linted by hadolint (with ShellCheck on its RUN lines), pinned, non-root, read-only-ready,
no secrets baked in. There is no Docker engine here, so the image itself is not built by these tests."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.manifests import CHART_DIR, REPO, SECRET_NAME

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# The pip-installed linters live next to the interpreter running the tests (requirements-deploy.txt).
BIN = Path(sys.executable).parent
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        logical.append(pending)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    result = []
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def arguments_of(keyword: str) -> list[str]:
    return [arguments for instruction, arguments in instructions() if instruction == keyword]


def test_hadolint_finds_nothing() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: pip install -r requirements-deploy.txt"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def global_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults (what `FROM ${NAME}` expands to)."""
    found: dict[str, str] = {}
    for instruction, arguments in instructions():
        if instruction == "FROM":
            break
        if instruction == "ARG":
            name, _, default = arguments.partition("=")
            found[name] = default
    return found


def test_every_base_image_is_pinned_to_an_exact_python_and_debian_release_and_its_digest() -> None:
    stages: set[str] = set()
    froms = arguments_of("FROM")
    assert len(froms) >= 2, "a multi-stage build: wheels are built apart from the runtime image"
    defaults = global_args()
    for arguments in froms:
        image, *alias = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], arguments).split()
        if image.lower() not in stages:
            assert PINNED_BASE.match(image), f"unpinned base image {image!r}"
            assert "latest" not in image
        if alias:
            assert alias[0].upper() == "AS"
            stages.add(alias[1].lower())


def test_the_runtime_runs_as_the_non_root_user_the_chart_expects() -> None:
    users = arguments_of("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid, so runAsNonRoot can verify it"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert int(uid) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"]
    assert gid and int(gid) == values["securityContext"]["runAsGroup"]


def test_the_image_stops_gracefully_and_suits_a_read_only_root() -> None:
    assert arguments_of("STOPSIGNAL") == ["SIGTERM"]
    env = " ".join(arguments_of("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "DJANGO_ENV=production" in env  # a bare `docker run` refuses to start without its secrets
    runs = " ".join(arguments_of("RUN"))
    assert "DJANGO_ENV=development python manage.py collectstatic --noinput" in runs
    entrypoint = arguments_of("ENTRYPOINT")[-1]
    assert "tini" in entrypoint and "/app/scripts/docker-entrypoint.sh" in entrypoint
    assert (REPO / "scripts" / "docker-entrypoint.sh").exists()
    assert arguments_of("CMD") == ['["web"]']


def test_no_secret_is_baked_into_the_image() -> None:
    for keyword in ("ENV", "ARG", "LABEL"):
        for arguments in arguments_of(keyword):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", arguments) or [arguments.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name.upper()), f"{keyword} {name} in the Dockerfile"


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")}
    assert {".git", ".venv", "var", ".env", "staticfiles", "tests", "**/__pycache__"} <= ignored
    assert "requirements.txt" not in ignored and "scripts" not in ignored
