"""Bounces: read a Maildir the MTA delivers bounces to; name the recipient of each one.

A bounce is recognised by the VERP address it was sent back to (``bounces+<recipient id>@…``,
see ``send.SmtpConfig.envelope_sender``) or, failing that, by the ``X-Flowbus-Recipient``
header of the returned original message.  The reason comes from the delivery-status part
(RFC 3464 ``Diagnostic-Code``/``Status``).  A processed message moves from ``new/`` to ``cur/``.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_REASON = "message renvoyé par le serveur du destinataire (rebond)"


def _verp_id(msg: Message, bounce_address: str | None) -> str | None:
    if not bounce_address:
        return None
    local, _, domain = bounce_address.lower().partition("@")
    pattern = re.compile(rf"{re.escape(local)}\+([0-9a-f]{{32}})@{re.escape(domain)}")
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Return-Path"):
        for value in msg.get_all(header, []):
            m = pattern.search(str(value).lower())
            if m:
                return m.group(1)
    return None


def _walk_ids(msg: Message) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            value = inner.get("X-Flowbus-Recipient") if inner is not None else None
            if value and _ID.match(value.strip()):
                return value.strip()
        elif ctype == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            m = re.search(rb"^X-Flowbus-Recipient:\s*([0-9a-f]{32})\s*$", text, re.MULTILINE | re.IGNORECASE)
            if m:
                return m.group(1).decode()
    return None


def _reason(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else []
        for block in blocks:
            diagnostic = block.get("Diagnostic-Code")
            status = block.get("Status")
            if diagnostic or status:
                text = str(diagnostic or "").split(";", 1)[-1].strip()
                return f"rebond {status or ''} {text}".strip()
    return DEFAULT_REASON


def parse_bounce(data: bytes, bounce_address: str | None) -> tuple[str, str] | None:
    """(recipient id, reason) for a bounce, None if the message names no recipient of ours."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    recipient_id = _verp_id(msg, bounce_address) or _walk_ids(msg)
    if recipient_id is None:
        return None
    return recipient_id, _reason(msg)


def read_maildir(folder: Path, bounce_address: str | None) -> list[tuple[str, str]]:
    new, cur = folder / "new", folder / "cur"
    if not new.is_dir():
        return []
    cur.mkdir(exist_ok=True)
    found: list[tuple[str, str]] = []
    for path in sorted(new.iterdir()):
        if not path.is_file():
            continue
        result = parse_bounce(path.read_bytes(), bounce_address)
        if result is not None:
            found.append(result)
        path.rename(cur / (path.name + ":2,S"))
    return found
