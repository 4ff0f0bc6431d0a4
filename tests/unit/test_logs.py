"""Repeated outage errors are rate-limited per message, with a count of what was held back."""

import logging

from streams.cli.logs import RateLimit


def test_one_line_per_interval_per_message_with_the_count():
    now = [0.0]
    limit = RateLimit(10.0, clock=lambda: now[0])

    def rec(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", level, __file__, 1, msg, (), None)

    passed = []
    for i in range(5000):
        now[0] = i * 0.001  # 5,000 errors in 5 s
        r = rec("Unable connect to %s")
        if limit.filter(r):
            passed.append(r.getMessage())
    assert passed == ["Unable connect to %s"]
    assert limit.filter(rec("another message"))  # other messages are not held back
    assert limit.filter(rec("debug chatter", logging.DEBUG))
    now[0] = 11.0
    r = rec("Unable connect to %s")
    assert limit.filter(r) and "4999 more like this" in r.msg
