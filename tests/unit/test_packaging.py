from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_names_the_stack():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "readmodel"} <= set(services)
    # the read model runs in its own process, as make run deploys it
    assert services["worker"]["environment"]["HEALTHMON_READMODEL_ENABLED"] == "false"
    assert "healthmon readmodel" in " ".join(services["readmodel"]["command"])
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["worker"]["environment"]["HEALTHMON_BROKER"].startswith("kafka://kafka:")
    assert services["redis"]["image"].startswith("redis")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
