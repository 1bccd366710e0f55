"""docker-compose.yml is valid Compose and every service it builds exists as a member."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _schema() -> dict[str, Any]:
    # The Compose Specification's JSON schema, as vendored by the check-jsonschema package.
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema.validate(_compose(), _schema())


def test_schema_rejects_a_broken_file() -> None:
    """The check can fail: an unknown service key is refused."""
    broken = _compose()
    broken["services"]["scp"]["not_a_compose_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


BUILT = {
    name: svc
    for name, svc in _compose()["services"].items()
    if isinstance(svc, dict) and "build" in svc
}


#: Workspace members under services/ that are no service of the box (no image of their own).
NOT_SERVICES = {"cli"}


def test_every_service_is_built() -> None:
    members = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists()}
    assert NOT_SERVICES <= members
    members -= NOT_SERVICES
    built = {
        re.match(r"services/([a-z]+)/", s["build"]["dockerfile"]).group(1) for s in BUILT.values()
    }  # type: ignore[union-attr]
    assert built == members


@pytest.mark.parametrize("name", sorted(BUILT))
def test_dockerfile_and_console_script_exist(name: str) -> None:
    svc = BUILT[name]
    dockerfile = ROOT / svc["build"]["dockerfile"]
    assert dockerfile.exists(), dockerfile
    cmd = re.search(r'^CMD \["([^"]+)"\]', dockerfile.read_text(), re.M)
    assert cmd, f"{dockerfile} has no exec-form CMD"
    member = dockerfile.parent
    scripts = tomllib.loads((member / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd.group(1) in scripts, f"{cmd.group(1)} is not a console script of {member.name}"
    module = scripts[cmd.group(1)].split(":")[0]
    assert (member / "src" / (module.replace(".", "/") + ".py")).exists(), module
    # Healthcheck and dependencies on the stateful services, as the edge box needs them.
    assert "HEALTHCHECK" in dockerfile.read_text()
    assert svc["depends_on"]["nats"]["condition"] == "service_healthy"
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_env_example_names_every_compose_variable() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, re.M))
    assert used <= defined, f"missing from .env.example: {sorted(used - defined)}"


def test_every_container_restarts_and_reports_its_health() -> None:
    """Docker restarts whatever exits (as the embedded runner does) and knows when it is ready:
    NATS and PostgreSQL by their own checks, each service by its readiness (/readyz: up, with
    its database and bus reachable), not mere liveness."""
    for name, svc in _compose()["services"].items():
        assert svc.get("restart") == "unless-stopped", name
        if name in BUILT:
            text = (ROOT / svc["build"]["dockerfile"]).read_text()
            # The port follows CB_HEALTH_PORT (9000 unless set), so that several containers can
            # share the host network (scripts/check_images.sh).
            health = (
                r"HEALTHCHECK .*\n.*127\.0\.0\.1:%s/readyz' % "
                r"os\.environ\.get\('CB_HEALTH_PORT', '9000'\)"
            )
            assert re.search(health, text), name
            assert svc["environment"]["CB_HEALTH_PORT"] == "9000", name
        elif name in ("nats", "postgres"):
            assert svc["healthcheck"]["test"], name


def _smoke() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "deploy" / "compose.smoke.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_smoke_profile_overrides_only_services_of_the_compose_file() -> None:
    """deploy/compose.smoke.yml (scripts/compose_smoke.sh) is valid Compose, runs every service
    of the station and NATS/PostgreSQL on the host's network from the images the check builds,
    and gives each listener its own port, so nothing collides on the host."""
    smoke = _smoke()
    jsonschema.validate(smoke, _schema())
    station = {n for n, s in _compose()["services"].items() if "profiles" not in s}
    assert set(smoke["services"]) == station
    for name, svc in smoke["services"].items():
        assert svc["network_mode"] == "host", name
        assert svc["image"].startswith("cinebridge-"), name
    text = (ROOT / "deploy" / "compose.smoke.yml").read_text()
    ports = re.findall(r"\$\{(CB_SMOKE_[A-Z_]+_PORT)", text)
    health = {svc["environment"]["CB_HEALTH_PORT"] for n, svc in smoke["services"].items()
              if n in BUILT}  # fmt: skip
    assert len(health) == len(BUILT)
    assert {"CB_SMOKE_NATS_PORT", "CB_SMOKE_POSTGRES_PORT", "CB_SMOKE_SCP_PORT"} <= set(ports)
    for stand_in in ("nats", "postgres"):
        assert (ROOT / "deploy" / "smoke" / f"{stand_in}.Dockerfile").exists()


@pytest.mark.parametrize("name", sorted(BUILT))
def test_production_image_has_no_testkit(name: str) -> None:
    """Test peers, harnesses and the demo worklist stay out of the images: the Dockerfile copies
    and installs no libs/testkit, and no member it installs depends on it."""
    dockerfile = ROOT / BUILT[name]["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "testkit" not in text, f"{dockerfile} installs the testkit"
    copied = re.findall(r"^COPY (libs/[a-z]+|services/[a-z]+) ", text, re.M)
    assert copied, f"{dockerfile} copies no workspace member"
    for member in copied:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        assert "cinebridge-testkit" not in project.get("dependencies", []), member
