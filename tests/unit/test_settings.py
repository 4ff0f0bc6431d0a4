import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_env_vars_with_prefix_and_nested_topics(monkeypatch):
    monkeypatch.setenv("HEALTHMON_PARTITIONS", "12")
    monkeypatch.setenv("HEALTHMON_TOPICS__USAGE", "prod.usage")
    monkeypatch.setenv("HEALTHMON_TOPIC_PREFIX", "eu.")
    monkeypatch.setenv("HEALTHMON_BROKER", "kafka://k1:9092;kafka://k2:9092")
    s = Settings()
    assert s.partitions == 12
    assert s.topic("usage") == "eu.prod.usage"
    assert s.topic("health") == "eu.cs.health"
    assert s.kafka_bootstrap == "k1:9092,k2:9092"


def test_bad_settings_fail_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HEALTHMON_STORE", "mongodb://x")
    with pytest.raises(ValidationError, match="store"):
        Settings()


def test_process_env_reproduces_the_settings(monkeypatch) -> None:
    from pydantic import SecretStr

    from streams.settings import Settings

    s = Settings(
        app_id="x1",
        partitions=3,
        clock="event",
        topic_prefix="p.",
        topics={"usage": "u.events"},
        smtp_password=SecretStr("pw"),
        readmodel_enabled=False,
    )
    env = s.process_env({"PATH": "/bin", "HEALTHMON_BROKER": "kafka://elsewhere:1"})
    assert env["PATH"] == "/bin" and "HEALTHMON_BROKER" not in env  # the caller's settings do not leak
    assert env["HEALTHMON_TOPICS__USAGE"] == "u.events" and env["HEALTHMON_SMTP_PASSWORD"] == "pw"
    for k in [k for k in __import__("os").environ if k.startswith("HEALTHMON_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings() == s
