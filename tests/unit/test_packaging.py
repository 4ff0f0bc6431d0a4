"""The deployment files (docker-compose.yml, Dockerfile, CI entry) checked structurally: these machines
have no Docker engine, so what compose would run is resolved against the real CLI and settings."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from streams.cli.main import main
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
KNOWN_IMAGES = ("apache/kafka:", "redis:", "axllent/mailpit:")
# Built on another branch (`healthmon serve` and its settings): checked as soon as they exist here.
PENDING_COMMANDS: set[str] = set()
PENDING_SETTINGS: set[str] = set()


def healthmon_services() -> dict[str, dict]:
    return {n: s for n, s in SERVICES.items() if s.get("image", "").startswith("healthmon") or "build" in s}


def resolve(args: list[str]) -> click.Command | None:
    """The CLI command ``args`` runs, its options parsed and type-checked (None: pending elsewhere)."""
    cmd: click.Command = main
    rest = list(args)
    name = "healthmon"
    while isinstance(cmd, click.Group):
        assert rest, f"{args}: names a group, not a command"
        name, rest = rest[0], rest[1:]
        if name not in cmd.commands and name in PENDING_COMMANDS:
            return None
        assert name in cmd.commands, f"{args}: no such command {name!r}"
        cmd = cmd.commands[name]
    cmd.make_context(name, rest)  # raises on an unknown option or a bad value
    return cmd


def env_of(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_stack_is_complete() -> None:
    assert set(SERVICES) >= {
        "kafka", "topics", "redis", "worker", "readmodel", "deliver", "serve", "ingest", "mailpit", "simulator"
    }  # fmt: skip
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert SERVICES["simulator"]["profiles"] == ["demo"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_command_exists(name: str) -> None:
    service = SERVICES[name]
    if name in healthmon_services():
        command = service["command"]
        assert command[0] == "healthmon", f"{name}: runs {command[0]}, not the installed healthmon"
        resolve(command[1:])
    else:
        assert service["image"].startswith(KNOWN_IMAGES), f"{name}: unknown image {service['image']}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_setting_is_a_real_setting(name: str) -> None:
    fields = set(Settings.model_fields) | PENDING_SETTINGS
    for var in env_of(SERVICES[name]):
        if var.startswith("HEALTHMON_"):
            field = var.removeprefix("HEALTHMON_").lower().split("__")[0]
            assert field in fields, f"{name}: {var} is not a healthmon setting (a typo is silently ignored)"


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_start_order_waits_for_what_each_service_needs() -> None:
    for name, service in SERVICES.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (
                    f"{name} waits for {dep} to be healthy: no health check"
                )
            elif condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart") == "no", f"{dep} is waited on to complete but restarts"
            else:
                assert condition == "service_started"
    for name in healthmon_services():
        if name != "topics":  # nothing reads or writes a topic before they exist
            cond = SERVICES[name]["depends_on"]["topics"]["condition"]
            assert cond == "service_completed_successfully", name
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert SERVICES["topics"]["command"] == ["healthmon", "topics", "create"]


def test_restart_policies_and_health_checks() -> None:
    for name, service in SERVICES.items():
        if name in ("topics", "simulator"):  # one-shot / would replay history onto the kept state
            assert service["restart"] == "no", name
        else:
            assert service["restart"] == "unless-stopped", name
    for name in ("kafka", "redis", "mailpit", "deliver", "serve", "ingest"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_volumes_are_declared_and_state_is_kept() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for vol in service.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert source in declared, f"{name}: volume {source} is not declared (or is a bind mount)"
    assert any(v.endswith(":/var/lib/kafka/data") for v in SERVICES["kafka"]["volumes"])
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert any(v.endswith(":/data") for v in SERVICES["worker"]["volumes"])


def test_redis_has_a_password_and_persistence() -> None:
    redis_cmd = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--requirepass" in redis_cmd
    assert "REDISCLI_AUTH" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    for name in healthmon_services():
        url = env_of(SERVICES[name]).get("HEALTHMON_REDIS_URL", "")
        assert re.match(r"redis://:\$\{REDIS_PASSWORD:-[^}]+\}@redis:6379/0$", url), (name, url)


def test_the_demo_is_the_one_make_run_runs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = dict(re.findall(r"^(DEMO_ACCOUNTS|DEMO_DAYS|DEMO_RATE) \?= (\d+)$", makefile, re.M))
    cmd = SERVICES["simulator"]["command"]
    params = resolve(cmd[1:]).make_context("simulate", cmd[2:]).params  # type: ignore[union-attr]
    assert params["accounts"] == int(demo["DEMO_ACCOUNTS"]) and params["days"] == int(demo["DEMO_DAYS"])
    assert params["rate"] == float(demo["DEMO_RATE"]) and params["produce"] and params["follow"]
    assert params["only_if_empty"]  # a second `up` with kept volumes must not replay the history again
    assert env_of(SERVICES["worker"])["HEALTHMON_READMODEL_ENABLED"] == "false"  # own readmodel service
    assert env_of(SERVICES["worker"])["HEALTHMON_CLOCK"] == "event"  # as make run's worker
    assert env_of(SERVICES["deliver"])["HEALTHMON_SMTP_HOST"] == "mailpit"
    assert env_of(SERVICES["worker"])["HEALTHMON_BROKER"] == "kafka://kafka:19092"


def test_ingest_runs_with_generated_secrets_never_defaults() -> None:
    """make run and compose start `healthmon ingest` with the secrets `make ingest-secrets` generates;
    neither file holds a secret of its own (the service has no default and refuses to start without)."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: .*\$\(INGEST_ENV\)", makefile, re.M)
    assert ". $(INGEST_ENV)" in makefile and 'NAME=ingest CMD="$(BIN)/healthmon ingest"' in makefile
    assert "secrets" in makefile.split("$(INGEST_ENV):", 1)[1].split("\n\n", 1)[0]  # generated at random
    ingest = SERVICES["ingest"]
    assert ingest["env_file"] == [{"path": ".local/run/ingest.env", "required": False}]
    env = env_of(ingest)
    assert not [k for k in env if "SECRET" in k or "WRITE_KEY" in k], env
    assert env["HEALTHMON_INGEST_HOST"] == "0.0.0.0" and ingest["ports"] == ["127.0.0.1:8090:8090"]


def test_the_image_is_small_non_root_and_installed_at_build_time() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^USER healthmon$", dockerfile, re.M)
    assert "pip install" in dockerfile and "-e ." not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!streams/" in ignored  # only the package goes in: no .venv, .local, .git
    for name in healthmon_services():
        assert "volumes" not in SERVICES[name] or all(
            not v.startswith((".", "/")) for v in SERVICES[name]["volumes"]
        ), f"{name}: a bind mount of the source tree"


def test_ci_runs_the_readme_test_command_and_the_kafka4_leg() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert "make test\n" in run and "make test-kafka4" in run
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_the_wheel_the_image_installs_ships_the_package_data(tmp_path: Path) -> None:
    """The image installs the built wheel, not the source tree: rules, templates, schemas must be in it."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("healthmon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pattern in (
        "rules/default/*.yaml",
        "alerts/templates/*",
        "alerts/routing.default.yaml",
        "streams/core/scorecard.default.yaml",
        "streams/schema/*.json",
        "streams/data/sample.jsonl",
        "streams/core/data/state_dict_v3.zdict",  # without it no v3 state record can be read
        "streams/core/data/state_dict_v4.zdict",  # nor v4
        "streams/ingest/ingest.default.yaml",
    ):
        assert any(Path(n).match(pattern) for n in names), f"{pattern} is not in the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "healthmon = streams.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
