from datetime import UTC, datetime

import pytest

from streams.broker.headers import output_headers, timestamp_ms
from streams.schema import all_schemas


@pytest.mark.parametrize("kind", ["health", "health-changes", "alerts"])
def test_output_headers_name_the_published_schema(kind) -> None:
    headers = dict(output_headers(kind))
    assert headers["content-type"] == b"application/json"
    assert headers["healthmon.schema"].decode() == all_schemas()[kind]["$id"]
    assert headers["healthmon.schema-version"] == b"1"
    assert headers["healthmon.kind"] == kind.encode()
    assert headers["healthmon.producer"].startswith(b"healthmon/")
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in output_headers(kind))


def test_record_timestamp_is_the_event_time() -> None:
    t = datetime(2026, 3, 2, 9, 0, 0, 250000, tzinfo=UTC)
    assert timestamp_ms(t) == 1772442000250
    assert timestamp_ms(t.timestamp()) == 1772442000250
