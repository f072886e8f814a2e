"""Tokens, templates and SMTP sending against a real aiosmtpd server on loopback."""

from __future__ import annotations

import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from flowbus.connectors.mailsec import tokens
from flowbus.connectors.mailsec.send import OutgoingMail, SmtpConfig, SmtpPool, build_message
from flowbus.connectors.mailsec.smtp_sim import SmtpSimulator
from flowbus.connectors.mailsec.templates import MessageTemplates
from flowbus.errors import ConfigError, PermanentError, TransientError
from flowbus.outbound import LOOPBACK, OutboundPolicy

LOOPBACK_POLICY = OutboundPolicy.parse(LOOPBACK)  # the simulators listen on loopback: allowed, as an operator would


def test_tokens_are_random_long_and_hashed():
    seen = {tokens.new_token() for _ in range(1000)}
    assert len(seen) == 1000
    tok = next(iter(seen))
    assert len(tok) >= 43 and tokens.looks_like_token(tok)
    assert tokens.hash_token(tok) != tok and len(tokens.hash_token(tok)) == 64
    assert tokens.hash_token(tok) == tokens.hash_token(tok)
    assert not tokens.looks_like_token("../etc/passwd")


def test_password_hash_and_lockout():
    stored = tokens.hash_password("Bonjour-2026")
    assert stored.startswith("scrypt$") and "Bonjour" not in stored
    assert tokens.verify_password("Bonjour-2026", stored)
    assert not tokens.verify_password("bonjour-2026", stored)
    assert not tokens.verify_password("x", "garbage")
    assert tokens.hash_password("a") != tokens.hash_password("a")  # salted
    policy = tokens.Lockout(max_attempts=5, lock_for=timedelta(minutes=15))
    now = datetime(2026, 1, 5, tzinfo=UTC)
    failed, locked = 0, None
    for _ in range(4):
        failed, locked = policy.after_failure(failed, now)
        assert locked is None
    failed, locked = policy.after_failure(failed, now)
    assert locked == now + timedelta(minutes=15) and policy.is_locked(locked, now + timedelta(minutes=14))
    assert not policy.is_locked(locked, now + timedelta(minutes=16))


def test_parse_duration():
    assert tokens.parse_duration("30d", field="link_ttl") == timedelta(days=30)
    assert tokens.parse_duration("12h", field="x") == timedelta(hours=12)
    assert tokens.parse_duration(90, field="x") == timedelta(seconds=90)
    with pytest.raises(ConfigError) as err:
        tokens.parse_duration("trente jours", field="link_ttl")
    assert err.value.field == "link_ttl"


CTX = {"fields": {"agent_nom": "Zoé <Durand>", "periode": "2026-01"}, "document": {"id": "d1"},
       "link": "https://mail.example.fr/mail/abc", "expires_at": datetime(2026, 2, 4, tzinfo=UTC),
       "recipient": {"address": "zoe@example.fr", "kind": "to"}, "sender": {"name": "Mairie", "address": "x"},
       "password_required": False}


def test_templates_inline_escape_and_defaults(tmp_path: Path):
    tpl = MessageTemplates.for_step({"subject": "Bulletin {{ fields.periode }}\nBcc: evil@x",
                                     "body_text": "Bonjour {{ fields.agent_nom }}, {{ link }}",
                                     "body_html": "<p>Bonjour {{ fields.agent_nom }}</p>"},
                                    flow_id="rh-paie", config_dir=tmp_path)
    out = tpl.render(CTX)
    assert out.subject == "Bulletin 2026-01 Bcc: evil@x"  # one line: no header injection
    assert out.text == "Bonjour Zoé <Durand>, https://mail.example.fr/mail/abc"
    assert out.html == "<p>Bonjour Zoé &lt;Durand&gt;</p>"
    default = MessageTemplates.for_step({}, flow_id="rh-paie", config_dir=tmp_path).render(CTX)
    assert "Mairie vous a adressé" in default.subject
    assert "https://mail.example.fr/mail/abc" in default.text and "4 février 2026" in default.text
    assert 'href="https://mail.example.fr/mail/abc"' in (default.html or "")
    with pytest.raises(PermanentError) as err:
        MessageTemplates.for_step({"subject": "{{ fields.inconnu.x }}"}, flow_id="f", config_dir=tmp_path).render(CTX)
    assert "inconnu" in str(err.value)
    with pytest.raises(ConfigError):
        MessageTemplates.for_step({"subject": "{% if %}"}, flow_id="f", config_dir=tmp_path)


def test_templates_from_config_folder(tmp_path: Path):
    folder = tmp_path / "mailsec" / "rh-paie"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Votre bulletin de paie {{ fields.periode }}", encoding="utf-8")
    (folder / "body.txt").write_text("Lien : {{ link }}", encoding="utf-8")
    out = MessageTemplates.for_step({}, flow_id="rh-paie", config_dir=tmp_path).render(CTX)
    assert out.subject == "Votre bulletin de paie 2026-01" and out.text == "Lien : https://mail.example.fr/mail/abc"
    with pytest.raises(ConfigError) as err:
        MessageTemplates.for_step({"template": "absent"}, flow_id="x", config_dir=tmp_path)
    assert err.value.field == "template"


def test_sandbox_blocks_python_internals(tmp_path: Path):
    tpl = MessageTemplates.for_step({"subject": "{{ fields.__class__.__mro__ }}"}, flow_id="f", config_dir=tmp_path)
    with pytest.raises(PermanentError):
        tpl.render(CTX)


def _decode(value: str) -> str:
    return str(make_header(decode_header(value)))


async def test_send_headers_french_subject_and_per_recipient_refusal():
    refuse = {"inconnu@example.fr": "550 5.1.1 Utilisateur inconnu", "plein@example.fr": "452 4.2.2 Mailbox full"}
    with SmtpSimulator(refuse=refuse) as sim:
        config = SmtpConfig.from_settings({"host": "127.0.0.1", "port": sim.port, "starttls": False,
                                           "from_address": "paie@mairie.example.fr", "from_name": "Mairie d'Été",
                                           "max_connections": 2, "bounce_address": "rebonds@mairie.example.fr"})
        pool = SmtpPool(config, outbound=LOOPBACK_POLICY)
        mails = [OutgoingMail(f"agent{i}@example.fr", "Votre bulletin de paie — février", f"lien {i} é",
                              f"<p>lien {i}</p>", recipient_id=f"r{i}") for i in range(20)]
        mails += [OutgoingMail("inconnu@example.fr", "s", "t", recipient_id="rx"),
                  OutgoingMail("plein@example.fr", "s", "t", recipient_id="ry"),
                  OutgoingMail("copie@example.fr", "s", "t", kind="cc"),
                  OutgoingMail("cachee@example.fr", "s", "t", kind="bcc")]
        results = await pool.send_many(mails)
        await pool.close()
    assert [r.ok for r in results[:20]] == [True] * 20
    refused, full = results[20], results[21]
    assert refused.refused and refused.code == 550 and "inconnu" in refused.message.lower()
    assert full.temporary and not full.refused and full.code == 452
    assert results[22].ok and results[23].ok
    assert len(sim.received) == 22
    got = sim.to("agent7@example.fr")
    assert len(got) == 1
    msg = got[0].message()
    assert got[0].mail_from == "rebonds+r7@mairie.example.fr"  # VERP
    assert _decode(msg["Subject"]) == "Votre bulletin de paie — février"
    raw_subject = got[0].data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n")[0]
    assert raw_subject.isascii() and b"=?utf-8?" in raw_subject  # RFC 2047 encoded words on the wire
    assert msg["To"] == "agent7@example.fr" and "Mairie d" in str(msg["From"])
    assert msg["X-Flowbus-Recipient"] == "r7"
    assert got[0].text().strip() == "lien 7 é" and "lien 7" in (got[0].html() or "")
    assert sim.to("copie@example.fr")[0].message()["Cc"] == "copie@example.fr"
    bcc = sim.to("cachee@example.fr")[0].message()
    assert "cachee" not in bcc.as_string().split("\n\n", 1)[0]


async def test_connections_are_reused():
    with SmtpSimulator() as sim:
        pool = SmtpPool(SmtpConfig.from_settings({"host": "127.0.0.1", "port": sim.port, "starttls": False,
                                                  "from_address": "a@b.fr", "max_connections": 1}), outbound=LOOPBACK_POLICY)
        for i in range(5):
            assert (await pool.send(OutgoingMail(f"x{i}@b.fr", "s", "t"))).ok
        assert len(pool._idle) == 1
        await pool.close()
    assert len(sim.received) == 5


async def test_auth_and_starttls(tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with SmtpSimulator(credentials=("paie", "s3cret"), tls_context=tls, require_starttls=True) as sim:
        base = {"host": "127.0.0.1", "port": sim.port, "from_address": "a@b.fr", "starttls": True,
                "ca_file": str(cert), "username": "paie"}
        pool = SmtpPool(SmtpConfig.from_settings({**base, "password": "s3cret"}), outbound=LOOPBACK_POLICY)
        assert (await pool.send(OutgoingMail("x@b.fr", "s", "t"))).ok
        await pool.close()
        bad = SmtpPool(SmtpConfig.from_settings({**base, "password": "wrong"}), outbound=LOOPBACK_POLICY)
        with pytest.raises(ConfigError) as err:
            await bad.send(OutgoingMail("x@b.fr", "s", "t"))
        assert err.value.field == "username" and "wrong" not in str(err.value)
    assert sim.logins == ["paie"] and len(sim.received) == 1


async def test_unreachable_server_is_transient():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = SmtpPool(SmtpConfig.from_settings({"host": "127.0.0.1", "port": port, "from_address": "a@b.fr",
                                              "timeout": 2}), outbound=LOOPBACK_POLICY)
    with pytest.raises(TransientError):
        await pool.send(OutgoingMail("x@b.fr", "s", "t"))
    results = await pool.send_many([OutgoingMail("x@b.fr", "s", "t")])
    assert results[0].temporary


def test_config_requires_host_and_sender():
    with pytest.raises(ConfigError) as err:
        SmtpConfig.from_settings({"from_address": "a@b.fr"})
    assert err.value.field == "host"
    with pytest.raises(ConfigError) as err:
        SmtpConfig.from_settings({"host": "h"})
    assert err.value.field == "from_address"
    assert b"X-Flowbus-Recipient: r1" in build_message(SmtpConfig(), OutgoingMail("a@b.fr", "s", "t", recipient_id="r1"))
