"""The Docker deliverables: compose file, Dockerfiles, example config.

No Docker engine is needed: the compose file is validated against the Compose
Specification's own JSON Schema (vendored in tests/fixtures/, see its README),
and the rest is checked by reading the files.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
CONFIG_FILE = DOCKER / "regate.toml"
DOCKERFILES = (DOCKER / "Dockerfile.gateway", DOCKER / "Dockerfile.runner")
FIXTURES = ROOT / "tests" / "fixtures"
SCHEMA_FILE = FIXTURES / "compose-spec.json"
OPA_VERSION_FILE = ROOT / "scripts" / "opa-version"
OPA_IMAGE = "openpolicyagent/opa"

Compose = dict[str, Any]


def _load_compose() -> Compose:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{COMPOSE_FILE} must be a YAML mapping"
    return document


def _load_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """The validator of the draft the schema names in `$schema`.

    The compose schema writes the draft-07 meta-schema's URI with https; jsonschema
    knows meta-schemas by their canonical http URI, so look that form up as well
    (rather than let jsonschema fall back, with a warning, to the latest draft).
    """
    declared = str(schema.get("$schema", ""))
    for uri in dict.fromkeys((declared, re.sub(r"^https://", "http://", declared))):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            try:
                cls = validator_for({"$schema": uri})
            except DeprecationWarning:  # jsonschema does not know this URI
                continue
        cls.check_schema(schema)
        return cls(schema)
    pytest.fail(f"{SCHEMA_FILE.name}: jsonschema does not know $schema {declared!r}")


def _errors(document: Compose) -> list[str]:
    validator = _validator(_load_schema())
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def _recorded_sha256() -> str:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    found = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", readme)
    assert found, "tests/fixtures/README.md must record the schema's sha256"
    return found.group(1)


def test_vendored_schema_is_unmodified() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == _recorded_sha256(), (
        f"{SCHEMA_FILE} differs from the upstream copy recorded in tests/fixtures/README.md"
    )


def test_compose_file_follows_the_compose_specification() -> None:
    assert _errors(_load_compose()) == []


def _unknown_service_key(doc: Compose) -> None:
    doc["services"]["gateway"]["listen_port"] = 8080


def _ports_not_a_list(doc: Compose) -> None:
    doc["services"]["gateway"]["ports"] = {"published": 8080}


def _bad_depends_on_condition(doc: Compose) -> None:
    doc["services"]["gateway"]["depends_on"]["opa"]["condition"] = "service_ready"


def _unknown_top_level_key(doc: Compose) -> None:
    doc["service"] = doc["services"]


@pytest.mark.parametrize(
    "breakage",
    [_unknown_service_key, _ports_not_a_list, _bad_depends_on_condition, _unknown_top_level_key],
    ids=lambda breakage: breakage.__name__.lstrip("_"),
)
def test_schema_rejects_a_broken_compose_file(breakage: Callable[[Compose], None]) -> None:
    broken = copy.deepcopy(_load_compose())
    breakage(broken)
    assert _errors(broken), f"the schema accepted a compose file with {breakage.__name__}"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    pairs: list[tuple[str, str]] = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_runs_as_a_non_root_user(dockerfile: Path) -> None:
    assert dockerfile.is_file(), f"{dockerfile} is missing"
    instructions = _instructions(dockerfile)
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert stages, f"{dockerfile.name} has no FROM"
    final_stage = instructions[stages[-1] :]
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, f"{dockerfile.name}: the final stage has no USER line, so it runs as root"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0", ""}, f"{dockerfile.name}: USER {users[-1]} is root"
    assert re.match(r"python:3\.11-slim-bookworm\b", instructions[stages[-1]][1]), (
        f"{dockerfile.name}: the runtime stage must be based on python:3.11-slim-bookworm"
    )


def test_runner_image_installs_bubblewrap_and_python3() -> None:
    runs = " ".join(
        args for keyword, args in _instructions(DOCKER / "Dockerfile.runner") if keyword == "RUN"
    )
    install = re.search(r"apt-get install ([^&;]*)", runs)
    assert install, "Dockerfile.runner must apt-get install its sandbox packages"
    assert {"bubblewrap", "python3"} <= set(install.group(1).split())


def test_compose_builds_from_the_repository_root_with_these_dockerfiles() -> None:
    services = _load_compose()["services"]
    for name in ("gateway", "runner"):
        build = services[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        user = str(services[name].get("user", "")).split(":", 1)[0]
        assert user not in {"root", "0"}, f"{name}: compose must not run it as root"


def test_runner_has_exactly_the_security_options_bwrap_needs() -> None:
    runner = _load_compose()["services"]["runner"]
    assert set(runner["security_opt"]) == {
        "seccomp=unconfined",
        "apparmor=unconfined",
        "systempaths=unconfined",
        "no-new-privileges:true",
    }
    assert runner.get("privileged", False) is False
    assert runner["cap_drop"] == ["ALL"]
    assert "cap_add" not in runner


def test_opa_image_is_the_pinned_version() -> None:
    pinned = OPA_VERSION_FILE.read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned), f"{OPA_VERSION_FILE}: {pinned!r}"
    image = _load_compose()["services"]["opa"]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository == OPA_IMAGE, f"OPA must be the official image, not {image}"
    assert tag in {pinned.removeprefix("v"), pinned.removeprefix("v") + "-static"}, (
        f"compose runs {image} but scripts/opa-version pins {pinned}"
    )


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def test_config_agrees_with_the_compose_file() -> None:
    config = tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    services = _load_compose()["services"]

    _, gateway_port = _host_port(config["gateway"]["listen"])
    assert f"127.0.0.1:8080:{gateway_port}" in services["gateway"]["ports"]
    _, admin_port = _host_port(config["admin"]["listen"])
    assert f"127.0.0.1:8081:{admin_port}" in services["gateway"]["ports"]
    token_dir = config["admin"]["token_file"].rpartition("/")[0]
    assert token_dir in {m["target"] for m in services["gateway"]["volumes"]}

    runner_host, runner_port = _host_port(config["runner"]["url"])
    assert runner_host == "runner"
    listen_host, listen_port = _host_port(config["runner"]["listen"])
    assert ipaddress.ip_address(listen_host).is_unspecified, "the runner must listen on its network"
    assert listen_port == runner_port
    assert f"127.0.0.1:{runner_port}/healthz" in " ".join(services["runner"]["healthcheck"]["test"])

    opa_host, opa_port = _host_port(config["opa"]["url"])
    assert opa_host == "opa"
    assert f"0.0.0.0:{opa_port}" in services["opa"]["command"]

    mounts = {m["target"] for m in services["gateway"]["volumes"]}
    assert config["gateway"]["state_dir"] in mounts, "the state dir must be a volume"
