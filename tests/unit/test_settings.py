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
