"""`healthmon import accounts|events` as an operator runs them, checked on the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.broker.admin import create_topics
from streams.broker.tail import read_to_end
from streams.settings import Settings
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.kafka

DATA = ROOT / "tests" / "data" / "ingest"

CRM_CSV = """Account ID,Company,Tier,Owner,Owner Email,Customer Since,Renewal,Exec Sponsor
acme,Acme Corp,Strategic,Dana Lee,dana@example.com,2024-02-01,2027-02-01,Wile E. Coyote
globex,Globex,SMB,Sam Hill,sam@example.com,2025-06-15T09:00:00Z,2026-06-15,
"""
MAPPING = [
    "--column", "account_id=Account ID", "--column", "name=Company", "--column", "segment=Tier",
    "--column", "csm_name=Owner", "--column", "csm_email=Owner Email", "--column", "signed_up_at=Customer Since",
    "--column", "renewal_date=Renewal", "--column", "executive_sponsor=Exec Sponsor",
    "--segment-value", "Strategic=enterprise",
]  # fmt: skip


async def values(s: Settings, kind: str) -> list[dict]:
    return [orjson.loads(m.value) async for m in read_to_end(s, s.topic(kind)) if m.value]


async def test_import_accounts_with_a_column_mapping(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    await create_topics(s)
    bad = tmp_path / "bad.csv"
    bad.write_text(CRM_CSV + "initech,Initech,Galactic,Bill,bill-at-example,2020-01-01,,\n")
    res = run_cli(s, "import", "accounts", str(bad), *MAPPING)
    assert res.returncode != 0 and f"{bad}:4: breaks contract v1" in res.stderr, res.stderr
    assert "segment" in res.stderr and "nothing sent" in res.stderr
    assert await values(s, "accounts") == []  # read to the topic's end: nothing of the refused file

    good = tmp_path / "crm.csv"
    good.write_text(CRM_CSV)
    for _ in range(2):  # the same export twice: the same event ids, so the worker counts it once
        res = run_cli(s, "import", "accounts", str(good), *MAPPING, "--as-of", "2026-12-07T06:00:00Z")
        assert res.returncode == 0, res.stderr
        assert "2 account(s) sent to cs.accounts" in res.stdout
    got = await values(s, "accounts")
    assert len(got) == 4 and len({e["event_id"] for e in got}) == 2
    acme = next(e for e in got if e["account_id"] == "acme")
    assert acme["segment"] == "enterprise" and acme["csm_email"] == "dana@example.com"
    assert acme["signed_up_at"] == "2024-02-01T00:00:00Z" and acme["occurred_at"] == "2026-12-07T06:00:00Z"
    assert (acme["renewal_date"], acme["executive_sponsor"]) == ("2027-02-01", "Wile E. Coyote")
    globex = next(e for e in got if e["account_id"] == "globex")
    assert globex["segment"] == "smb" and globex.get("executive_sponsor") is None  # (contract 1.1: optional)

    res = run_cli(s, "import", "accounts", str(good))  # the default column names are not in this file
    assert res.returncode != 0 and "the header has no column for account_id" in res.stderr


async def test_import_events_in_any_sources_format(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    await create_topics(s)
    lines = [
        orjson.loads((DATA / "stripe_subscription_created.json").read_bytes()),
        orjson.loads((DATA / "segment_batch.json").read_bytes()),
        orjson.loads((DATA / "zendesk_ticket_created.json").read_bytes()),
        {
            "event_id": "c-1",
            "account_id": "initech",
            "type": "nps",
            "occurred_at": "2026-12-01T10:00:00Z",
            "user_id": "u1",
            "score": 9,
        },
    ]
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(history.read_bytes() + b'{"what": "is this"}\n')
    res = run_cli(s, "import", "events", str(bad))
    assert res.returncode != 0 and f"{bad}:5: format not recognised" in res.stderr, res.stderr

    res = run_cli(s, "import", "events", str(history))
    assert res.returncode == 0, res.stderr
    assert "6 event(s) sent (2 message(s) the mapping ignores)" in res.stdout
    assert [e["event_id"] for e in await values(s, "billing")] == ["evt_1NG8Du2eZvKYlo2CUI79vXWy"]
    assert sorted(e["type"] for e in await values(s, "usage")) == ["feature_used", "login", "session"]
    (ticket,) = await values(s, "tickets")
    assert ticket["ticket_id"] == "5158" and ticket["account_id"] == "8447388091137"  # no mapping: the org id
    assert [e["event_id"] for e in await values(s, "surveys")] == ["c-1"]
