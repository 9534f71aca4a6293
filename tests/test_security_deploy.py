"""Deployment files checked by the tools that read them, where those run here.

- compose: `docker compose config` (v2 plugin) or `docker-compose config` (v1), which
  need no daemon; the YAML is also read and its services/volumes/images checked.
- systemd: `systemd-analyze verify` (no unknown keys) and `systemd-analyze security`.
- GitHub Actions: the workflow validated against its JSON schema (check-jsonschema's
  vendored copy), its job graph and its use of secrets checked.
- Bicep: parsed with pycep-parser (a syntax check; the official `bicep` CLI is a
  binary downloaded from GitHub, which this machine cannot reach), module wiring and
  the Event Grid topic spaces compared with `contracts.topics`.
- Images: the gateway's extra never pulls TensorFlow or pandas (installed metadata).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from contracts import topics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "vigil-gateway.service"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
AZURE = DEPLOY / "azure"
BIN = Path(sys.executable).parent

# --- compose ---------------------------------------------------------------------


def _compose_env(tmp_path: Path) -> dict[str, str]:
    # Values a operator would export; placeholders, created only for this test.
    env = dict(os.environ)
    env.update(
        POSTGRES_PASSWORD="only-for-this-test",
        VIGIL_PKI=str(tmp_path / "pki"),
        VIGIL_SIGNING_KEY=str(tmp_path / "signing.key"),
    )
    return env


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid_for_the_compose_cli(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = _compose_env(tmp_path)
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"mosquitto-init", "mosquitto", "postgres", "mlflow", "hub"}
    # a missing secret is an error naming it, not an empty password
    env.pop("POSTGRES_PASSWORD")
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr


def test_compose_runs_the_shipped_broker_config_with_data_volumes():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert set(services) == {"mosquitto-init", "mosquitto", "postgres", "mlflow", "hub"}
    mq = services["mosquitto"]
    assert mq["image"].startswith("eclipse-mosquitto:2")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in mq["volumes"]}
    assert mounts["/etc/mosquitto/vigil/mosquitto.conf"] == "./mosquitto/mosquitto.conf"
    assert mounts["/etc/mosquitto/vigil/acl"] == "./mosquitto/acl"
    assert mq["ports"] == ["8883:8883"]  # TLS only
    assert services["postgres"]["image"].startswith("postgres:")
    ml = services["mlflow"]
    args = " ".join(ml["command"])
    assert "--backend-store-uri=postgresql+psycopg://" in args and "@postgres:5432/mlflow" in args
    assert "--artifacts-destination=/var/lib/mlflow/artifacts" in args
    assert ml["build"]["dockerfile"] == "deploy/docker/hub.Dockerfile"
    hub = services["hub"]
    assert hub["environment"]["VIGIL_HUB_MQTT_PORT"] == "8883"
    assert hub["environment"]["VIGIL_HUB_MQTT_HOST"] == "mosquitto"
    assert set(hub["secrets"]) == {"hub_tls_key", "bundle_signing_key"}
    named = set(doc["volumes"])
    assert named == {"mosquitto-data", "postgres-data", "mlflow-artifacts", "hub-data"}
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if ":" in v}
    assert named <= used
    for path in (ROOT / ml["build"]["dockerfile"], DEPLOY / "docker" / "postgres-init.sql"):
        assert path.exists(), path


def test_compose_hub_settings_are_ones_the_hub_reads():
    from cloud_hub.settings import HubSettings

    env = yaml.safe_load(COMPOSE.read_text())["services"]["hub"]["environment"]
    fields = set(HubSettings.model_fields)
    hub_vars = [k for k in env if k.startswith("VIGIL_HUB_")]
    assert len(hub_vars) >= 6
    for var in hub_vars:
        assert var.removeprefix("VIGIL_HUB_").lower() in fields, var
    azure = (AZURE / "modules" / "containerapps.bicep").read_text()
    for var in re.findall(r"name: '(VIGIL_HUB_\w+)'", azure):
        assert var.removeprefix("VIGIL_HUB_").lower() in fields, var


# --- containers ------------------------------------------------------------------


def _requires_closure(root_reqs: list[str]) -> set[str]:
    """Installed distributions reachable from requirement strings (markers honoured)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(root_reqs)
    while todo:
        req = Requirement(todo.pop())
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        todo.extend(dist.requires or [])
    return seen


def test_gateway_install_pulls_no_tensorflow_or_pandas():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    closure = _requires_closure(project["dependencies"] + project["optional-dependencies"]["edge"])
    assert "ai-edge-litert" in closure and "paho-mqtt" in closure
    heavy = {"tensorflow", "tensorflow-cpu", "keras", "pandas", "torch", "mlflow"}
    assert not (closure & heavy), closure & heavy


def test_gateway_image_copies_no_hub_code_and_runs_as_vigil():
    text = (DEPLOY / "docker" / "gateway.Dockerfile").read_text()
    copies = re.findall(r"^COPY (?!--from)(\S+)", text, re.M)
    assert "cloud_hub" not in copies and "converters" not in copies
    assert "pip install -e '.[edge]'" in text
    assert re.search(r"^USER vigil$", text, re.M)
    assert "--platform linux/amd64,linux/arm64" in text
    ignore = (DEPLOY / "docker" / "gateway.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "**" and "**/*.key" in ignore


# --- systemd ---------------------------------------------------------------------


def _unit_for_here(tmp_path: Path, unit: Path = UNIT) -> Path:
    """A shipped unit with ExecStart pointed at this checkout's vigil (verify needs it)."""
    text = unit.read_text().replace("/opt/vigil/venv/bin/vigil", str(BIN / "vigil"))
    out = tmp_path / unit.name
    out.write_text(text)
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["vigil-gateway.service", "vigil-crl.service"])
def test_systemd_units_verify_cleanly(tmp_path, name):
    unit = _unit_for_here(tmp_path, DEPLOY / "systemd" / name)
    units = [unit]
    timer = unit.with_suffix(".timer")
    if (DEPLOY / "systemd" / timer.name).exists():
        shutil.copy(DEPLOY / "systemd" / timer.name, timer)
        units.append(timer)
    out = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # unknown or misspelt keys are only warned about: treat any warning as a failure
    assert out.stderr.strip() == "", out.stderr


def test_gateway_unit_and_image_start_the_gateway_the_cli_knows():
    """ExecStart and the image's CMD name a real command and only options it accepts."""
    exec_start = re.search(r"^ExecStart=\S+/vigil (.+)$", UNIT.read_text(), re.M)
    cmd = re.search(r"^CMD (\[.+\])$", (DEPLOY / "docker" / "gateway.Dockerfile").read_text(), re.M)
    assert exec_start and cmd
    for argv in (exec_start[1].split(), json.loads(cmd[1])):
        assert argv[:2] == ["edge", "run"]
        out = subprocess.run(
            [str(BIN / "vigil"), *argv[:2], "--help"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        for opt in (a for a in argv[2:] if a.startswith("--")):
            assert opt in out.stdout, f"{opt} is not an option of `vigil edge run`"
        assert "--headless" in argv  # no terminal under systemd or in a container


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_is_hardened(tmp_path):
    unit = _unit_for_here(tmp_path)
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout[-500:] + out.stderr[-500:]
    assert float(m[1]) <= 2.0, f"exposure {m[1]} (0 = locked down, 10 = unprotected)"
    text = UNIT.read_text()
    for line in ("User=vigil", "ProtectSystem=strict", "Restart=always", "NoNewPrivileges=yes"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^ReadWritePaths=/var/lib/vigil\b", text, re.M)


# --- CI/CD workflow --------------------------------------------------------------


def _workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def test_workflow_matches_the_github_actions_schema():
    exe = BIN / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (dev extra)")
    out = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_deploys_only_after_images_pushed_after_tests():
    jobs = _workflow()["jobs"]
    assert set(jobs) == {"test", "push", "deploy"}
    assert "needs" not in jobs["test"]
    assert jobs["push"]["needs"] == "test"
    assert jobs["deploy"]["needs"] == "push"
    assert "refs/heads/main" in jobs["deploy"]["if"]
    assert jobs["deploy"]["environment"] == "production"
    assert any("make test" in (s.get("run") or "") for s in jobs["test"]["steps"])
    builds = [s for s in jobs["push"]["steps"] if "build-push-action" in s.get("uses", "")]
    platforms = {s["with"]["file"]: s["with"]["platforms"] for s in builds}
    assert platforms["deploy/docker/gateway.Dockerfile"] == "linux/amd64,linux/arm64"
    assert "deploy/docker/hub.Dockerfile" in platforms
    for name in ("push", "deploy"):
        assert jobs[name]["permissions"]["id-token"] == "write"  # OIDC, no client secret
        logins = [s for s in jobs[name]["steps"] if s.get("uses", "").startswith("azure/login")]
        assert logins and all("client-secret" not in s["with"] for s in logins)
        assert all(s["with"]["client-id"] == "${{ secrets.AZURE_CLIENT_ID }}" for s in logins)


def test_workflow_takes_secrets_only_from_the_secret_store():
    text = WORKFLOW.read_text()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.search(
            r"(password|secret|token|client-id|tenant-id)[\w-]*\s*[:=]\s*(.+)", line, re.I
        )
        if m and "id-token" not in line:
            value = m[2].strip()
            assert value.startswith(("${{ secrets.", '"$', "$")), line
    assert "${{ secrets.POSTGRES_ADMIN_PASSWORD }}" in text


# --- Azure Bicep -----------------------------------------------------------------


def _bicep(path: Path) -> dict:
    from pycep import BicepParser

    return BicepParser().parse(file_path=path)


def test_every_bicep_file_parses():
    files = sorted(AZURE.rglob("*.bicep"))
    assert {p.name for p in files} >= {
        "main.bicep",
        "eventgrid-mqtt.bicep",
        "postgres.bicep",
        "storage.bicep",
        "keyvault.bicep",
        "containerapps.bicep",
    }
    for path in files:
        assert _bicep(path)["parameters"], path


def test_bicep_modules_get_exactly_the_parameters_they_declare():
    main = _bicep(AZURE / "main.bicep")
    for name, mod in main["modules"].items():
        cfg = mod["config"].get("config", mod["config"])
        given = set(cfg["params"])
        declared = _bicep(AZURE / mod["detail"]["path"])["parameters"]
        required = {p for p, d in declared.items() if d.get("default") is None}
        assert given <= set(declared), (name, given - set(declared))
        assert required <= given, (name, required - given)


def test_bicep_passwords_are_secure_parameters_and_not_in_the_parameter_file():
    main = _bicep(AZURE / "main.bicep")
    decorators = [d["type"] for d in main["parameters"]["postgresAdminPassword"]["decorators"]]
    assert "secure" in decorators
    pg = _bicep(AZURE / "modules" / "postgres.bicep")
    assert "secure" in [d["type"] for d in pg["parameters"]["adminPassword"]["decorators"]]
    params = json.loads((AZURE / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= set(main["parameters"])
    assert not {p for p in params if "password" in p.lower() or "secret" in p.lower()}


def test_event_grid_topic_spaces_enforce_the_design_access_rules():
    eg = _bicep(AZURE / "modules" / "eventgrid-mqtt.bicep")
    own = eg["variables"]["own"]["value"].replace("\\${client.authenticationName}", "GW")
    spaces = {}
    for res in eg["resources"].values():
        if res["type"] == "Microsoft.EventGrid/namespaces/topicSpaces":
            cfg = res["config"]
            spaces[cfg["name"]] = {
                t.replace("${own}", own) for t in cfg["properties"]["topicTemplates"]
            }
    bed = "BED"

    def gw_topics(gw: str) -> set[str]:
        return {
            topics.status(gw),
            topics.model_state(gw),
            topics.vitals(gw, bed).replace(bed, "+"),
            topics.risk(gw, bed).replace(bed, "+"),
            topics.alarm(gw, bed).replace(bed, "+"),
            topics.observation(gw, bed).replace(bed, "+"),
            topics.shadow(gw),
        }

    assert spaces["gw-own-telemetry"] == gw_topics("GW")
    assert spaces["gw-own-cmd"] == {topics.cmd("GW")}
    assert spaces["models"] == {f"{topics.PREFIX}/models/#"}
    assert spaces["fleet-telemetry"] == set(topics.GATEWAY_FILTERS)
    assert spaces["fleet-cmd"] == {f"{topics.PREFIX}/gw/+/cmd"}
    names = {
        k: r["config"]["name"]
        for k, r in eg["resources"].items()
        if r["type"].endswith(("topicSpaces", "clientGroups"))
    }

    def ref(expr: dict) -> str:  # `gwOwn.name` -> the resource's name
        return names[expr["operator"]["operands"]["operand_1"]]

    granted = {
        (ref(b["group"]), b["permission"], ref(b["space"]))
        for b in eg["variables"]["bindings"]["value"]
    }
    assert granted == {
        ("gateways", "Publisher", "gw-own-telemetry"),
        ("gateways", "Subscriber", "gw-own-cmd"),
        ("gateways", "Subscriber", "models"),
        ("hub", "Subscriber", "fleet-telemetry"),
        ("hub", "Publisher", "fleet-cmd"),
        ("hub", "Publisher", "models"),
        ("hub", "Subscriber", "models"),  # each channel's target, for the fleet view
    }
