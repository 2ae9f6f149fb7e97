"""Supply chain (issue #13, point 8): the image installs only hash-pinned locks that agree with the pinned
requirements, `make audit` reads those locks, and a CycloneDX SBOM is written at build. Offline: no PyPI,
no Docker engine (the Dockerfile's own commands are run here where they can be)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.deploy.manifests import REPO
from tests.deploy.test_dockerfile import arguments_of

BIN = Path(sys.executable).parent
# (pinned requirements, the lock `make lock` makes from them)
LOCKS = [("requirements.txt", "requirements.lock"), ("requirements-sbom.txt", "requirements-sbom.lock")]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (extras dropped), following `-r` includes."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            found |= pins(path.parent / line[3:].strip())
        elif match := _PIN.match(line):
            found[normalized(match.group(1))] = match.group(2)
        else:
            assert not line or line.startswith(("#", "--hash")), f"{path.name}: not a pin: {line!r}"
    return found


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a lock written by `uv pip compile --generate-hashes`."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if match := _PIN.match(line.strip()):
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
            entries[normalized(match.group(1))] = (match.group(2), hashes)
    return entries


# --- the locks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requirements", "lock"), LOCKS)
def test_each_lock_agrees_with_its_pinned_requirements(requirements: str, lock: str) -> None:
    wanted, got = pins(REPO / requirements), locked(REPO / lock)

    hint = f"{lock} is stale: run `make lock` (and pin in {requirements} every package it adds)"
    assert {name: version for name, (version, _) in got.items()} == wanted, hint
    for name, (_, hashes) in got.items():
        assert hashes, f"{lock}: {name} has no --hash"


def test_the_agreement_check_is_not_vacuous(tmp_path: Path) -> None:
    stale = tmp_path / "requirements.lock"
    stale.write_text((REPO / "requirements.lock").read_text().replace("django==5.2.19", "django==5.2.18"))
    pinned = pins(REPO / "requirements.txt")

    assert pinned["django"] == "5.2.19"
    assert locked(stale)["django"][0] == "5.2.18"
    assert len(locked(REPO / "requirements.lock")) == len(pinned) >= 50


def test_the_runtime_lock_holds_nothing_of_the_tools() -> None:
    runtime = set(locked(REPO / "requirements.lock"))

    assert not runtime & {"pytest", "ruff", "mypy", "cyclonedx-bom", "pip-audit", "uv", "helm-python-sdk"}


# --- the image ------------------------------------------------------------------------------------------------------


def _pip_commands() -> list[list[str]]:
    commands = []
    for run in arguments_of("RUN"):
        for part in re.split(r"&&|;", run):
            words = shlex.split(part.replace("\\", " "))
            while words and words[0].startswith("--mount="):
                words = words[1:]
            if words and words[0].endswith("pip") and words[1] in ("install", "download", "wheel"):
                commands.append(words)
    return commands


def test_the_image_installs_every_python_package_from_a_lock_with_require_hashes() -> None:
    commands = _pip_commands()

    assert len(commands) >= 3  # download the wheels, install the SBOM tool, install the app's packages
    for words in commands:
        assert "--require-hashes" in words, words
        requirement_files = [words[i + 1] for i, word in enumerate(words) if word == "-r"]
        assert requirement_files and all(f.endswith(".lock") for f in requirement_files), words
    runtime = [w for w in commands if w[1] == "install" and "--no-index" in w]
    assert len(runtime) == 1 and runtime[0][-1] == "/tmp/requirements.lock"
    download = [w for w in commands if w[1] == "download"]
    assert len(download) == 1 and "--only-binary=:all:" in download[0]  # nothing is built from an sdist


def test_the_build_context_carries_the_locks() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not {"requirements.lock", "requirements-sbom.lock", "*.lock"} & ignored
    assert "COPY requirements.lock requirements-sbom.lock ./" in "\n".join(f"COPY {a}" for a in arguments_of("COPY"))


def test_the_image_writes_a_cyclonedx_sbom_of_what_it_installed_and_the_command_works(tmp_path: Path) -> None:
    # given the SBOM step of the Dockerfile
    (command,) = [
        shlex.split(part.replace("\\", " "))
        for run in arguments_of("RUN")
        for part in run.split("&&")
        if "cyclonedx-py" in part
    ]
    assert command[0] == "/opt/sbom/bin/cyclonedx-py" and command[1] == "environment"
    assert command[command.index("-o") + 1] == "/app/sbom.cdx.json"

    # when it runs here, against a small fresh environment instead of the image's interpreter (the whole
    # test environment takes minutes to describe)
    target = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=120)
    output = tmp_path / "sbom.cdx.json"
    here = [str(BIN / "cyclonedx-py"), *command[1:-1], str(target / "bin" / "python")]
    here[here.index("-o") + 1] = str(output)
    result = subprocess.run(here, capture_output=True, text=True, timeout=120, check=False)

    # then it writes a valid CycloneDX document naming what that environment has installed
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    components = {normalized(c["name"]): c for c in json.loads(text)["components"]}
    pip_version = subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert components["pip"]["version"] == pip_version


def test_make_sbom_lists_every_locked_package_with_its_version_and_hashes(tmp_path: Path) -> None:
    # the command of `make sbom`, into a temporary file
    makefile = (REPO / "Makefile").read_text()
    line = next(line.strip() for line in makefile.splitlines() if "cyclonedx-py requirements" in line)
    words = shlex.split(line.replace("$(BIN)", str(BIN)))
    words[words.index("-o") + 1] = str(tmp_path / "sbom.json")

    subprocess.run(words, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)

    sbom = json.loads((tmp_path / "sbom.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = {normalized(c["name"]): c for c in sbom["components"]}
    lock = locked(REPO / "requirements.lock")
    assert set(components) == set(lock)
    for name, (version, hashes) in lock.items():
        component = components[name]
        assert component["version"] == version
        assert component["purl"] == f"pkg:pypi/{name}@{version}"
        distribution = [ref for ref in component["externalReferences"] if ref["type"] == "distribution"]
        assert {h["content"] for ref in distribution for h in ref["hashes"]} == set(hashes), name


# --- make audit ---------------------------------------------------------------------------------------------------


def test_make_audit_reads_every_lock_strictly_with_its_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    audit = makefile.split("\naudit:", 1)[1].split("\n\n", 1)[0]
    assert "pip-audit" in audit and "--strict" in audit and "--require-hashes" in audit
    assert "$(LOCK_FILES)" in audit
    assert re.search(r"^LOCK_FILES := requirements\.lock requirements-sbom\.lock$", makefile, re.M)

    for _, lock in LOCKS:  # what it runs, minus the lookup (no network here)
        options = ["--progress-spinner", "off", "--strict", "--require-hashes", "--disable-pip", "--dry-run"]
        result = subprocess.run(
            [str(BIN / "pip-audit"), *options, "-r", lock],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"would have audited {len(locked(REPO / lock))} packages" in result.stderr
