"""Secrets at rest: a connector password and a webhook secret set through the API are never in clear in the
database (both backend sets), read back in clear by the server only, and `flowbus secrets rotate` seals them
again with a new key, after which the old key is gone and everything still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowbus import secretbox
from flowbus.app import build
from flowbus.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "mot-de-passe-S2LOW-tres-secret"


async def _raw(rt) -> str:
    async with rt.store.transaction() as tx:
        rows = await tx.fetch("SELECT settings FROM connector_instances")
        hooks = await tx.fetch("SELECT secret FROM webhooks")
    return " ".join(r["settings"] for r in rows) + " " + " ".join(r["secret"] for r in hooks)


@pytest.mark.parametrize("backend", ["embedded", "scaleout"], indirect=True)
async def test_no_secret_in_clear_in_the_database(backend, runtime, server_factory):
    srv = await server_factory(runtime)
    async with srv.client() as api:
        r = await api.put("/api/v1/connectors/tdt-actes", json={
            "family": "tdt-actes", "kind": "s2low", "entity": None,
            "settings": {"url": "https://s2low.example.fr", "login": "commune", "password": PASSWORD}})
        assert r.status == 200, await r.text()
        assert PASSWORD not in await r.text()
        ent = (await (await api.post("/api/v1/entities", json={"name": "Commune"})).json())["id"]
        r = await api.post("/api/v1/webhooks", json={"entity": ent, "url": "https://hooks.example.fr/flowbus",
                                                     "secret": "un-secret-de-webhook-assez-long"})
        assert r.status == 201, await r.text()
    raw = await _raw(runtime)
    assert PASSWORD not in raw and "un-secret-de-webhook-assez-long" not in raw
    assert raw.count(secretbox.PREFIX) == 2
    async with runtime.store.transaction() as tx:
        inst = await runtime.instances.resolve(tx, "tdt-actes", ent)
    assert inst.settings["password"] == PASSWORD and inst.settings["login"] == "commune"


async def _signer_p12(rt) -> str:
    async with rt.store.transaction() as tx:
        return await tx.fetchval("SELECT p12 FROM parapheur_signer_keys WHERE signer_id = 'signer-1'")


async def test_rotate_seals_again_with_a_new_key_and_drops_the_old(runtime_factory, settings_factory):
    import base64

    from flowbus.signature import parapheur
    rt = await runtime_factory("embedded", workers=False)
    p12 = b"\x30\x82 a signer's PKCS#12, locked by their code"
    async with rt.store.transaction() as tx:
        await rt.instances.save(tx, {"id": "mailsec", "family": "mailsec", "kind": "smtp", "entity": None,
                                     "settings": {"host": "smtp.example.fr", "password": PASSWORD}}, at=rt.clock.now())
        await parapheur.set_signer_key(tx, "signer-1", p12, subject="CN=Élue", not_after=rt.clock.now(),
                                       now=rt.clock.now(), box=rt.secrets)
    sealed = await _signer_p12(rt)
    assert sealed.startswith(secretbox.PREFIX) and base64.b64encode(p12).decode() not in sealed
    key_file = secretbox.key_file(rt.settings)
    old_key = key_file.read_text().strip()
    before = await _raw(rt)
    await rt.close()
    env = {**os.environ, "FLOWBUS_DATA_DIR": str(rt.settings.data_dir), "FLOWBUS_CONFIG_DIR": str(ROOT / "config")}
    out = subprocess.run([sys.executable, "-m", "flowbus", "secrets", "rotate"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 connecteur(s), 0 webhook(s) et 1 certificat(s) de signataire rechiffrés." in out.stdout
    new_key = key_file.read_text().strip()
    assert new_key != old_key and "\n" not in new_key, "only the new key is left"
    rt2 = await build(rt.settings)
    try:
        after = await _raw(rt2)
        assert after != before and PASSWORD not in after
        async with rt2.store.transaction() as tx:
            inst = await rt2.instances.resolve(tx, "mailsec", "nowhere-entity-is-fine-for-platform")
        assert inst.settings["password"] == PASSWORD
        assert await _signer_p12(rt2) != sealed
        async with rt2.store.transaction() as tx:
            assert (await parapheur.signer_key(tx, "signer-1", rt2.secrets)).p12 == p12
        with pytest.raises(ConfigError, match="ne se déchiffre avec aucune des clés"):
            secretbox.SecretBox([old_key.encode()]).open(after.split('"password": "')[1].split('"')[0])
    finally:
        await rt2.close()
