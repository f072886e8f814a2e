"""GroupCommit: concurrent writes share one transaction; a failing write fails only its own caller."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from flowbus.connectors.mailsec.bounces import parse_bounce
from flowbus.connectors.mailsec.steps import GroupCommit, MailsecParams, recipient_addresses
from flowbus.errors import ConfigError
from flowbus.store.sqlite import SQLiteStore


async def test_group_commit_batches_and_isolates_failures(tmp_path):
    db = SQLiteStore(tmp_path / "t.sqlite3")
    await db.open()
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    transactions = 0
    real = db.transaction

    def counting():
        nonlocal transactions
        transactions += 1
        return real()
    db.transaction = counting  # type: ignore[method-assign]
    writes = GroupCommit(SimpleNamespace(store=db))

    def insert(k: int):
        async def fn(tx):
            await tx.execute("INSERT INTO t (k) VALUES ($1)", k)
            return k
        return fn

    assert await asyncio.gather(*(writes.run(insert(k)) for k in range(50))) == list(range(50))
    assert transactions == 1  # fifty writes, one transaction
    results = await asyncio.gather(writes.run(insert(100)), writes.run(insert(3)), writes.run(insert(101)),
                                   return_exceptions=True)
    assert results[0] == 100 and results[2] == 101 and isinstance(results[1], Exception)  # 3 exists already
    async with real() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM t") == 52
    await db.close()


def test_recipient_expansion_and_params():
    params = MailsecParams.parse({"to": ["agent_email", "drh@mairie.fr"], "cc": ["copies"], "bcc": ["DRH@mairie.fr"]})
    got = recipient_addresses(params, {"agent_email": "a@x.fr", "copies": "b@x.fr; c@x.fr , a@x.fr"})
    assert got == [("to", "a@x.fr"), ("to", "drh@mairie.fr"), ("cc", "b@x.fr"), ("cc", "c@x.fr")]
    assert recipient_addresses(params, {}) == [("to", "drh@mairie.fr")]
    with pytest.raises(ConfigError) as err:
        MailsecParams.parse({"password": "1234"})
    assert err.value.field == "password"
    with pytest.raises(ConfigError):
        MailsecParams.parse({"on_deadline": "jamais"})
    assert MailsecParams.parse({"wait_for_read": True}).allow_reply is True


def test_bounce_parsing_by_verp_and_by_returned_headers():
    rid = "0123456789abcdef0123456789abcdef"
    verp = (f"To: rebonds+{rid}@mairie.fr\r\nSubject: x\r\nContent-Type: multipart/report; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            "Final-Recipient: rfc822; z@x.fr\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--b--\r\n").encode()
    assert parse_bounce(verp, "rebonds@mairie.fr") == (rid, "rebond 5.1.1 550 5.1.1 no such user")
    returned = (f"To: postmaster@mairie.fr\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
                f"Content-Type: text/rfc822-headers\r\n\r\nX-Flowbus-Recipient: {rid}\r\nSubject: s\r\n\r\n--b--\r\n")
    assert parse_bounce(returned.encode(), None)[0] == rid
    assert parse_bounce(b"To: someone@x.fr\r\n\r\nhello", "rebonds@mairie.fr") is None
