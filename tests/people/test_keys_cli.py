"""`flowbus keys`: the operator creates an administrator key on the server when the last one is lost, lists
and revokes keys; the new key opens the API, the revoked one no longer does."""

from __future__ import annotations

import os
import subprocess
import sys


async def test_lost_key_recovered_on_the_server(runtime_factory, server_factory):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    env = {**os.environ, "FLOWBUS_DATA_DIR": str(rt.settings.data_dir),
           "FLOWBUS_CONFIG_DIR": str(rt.settings.config_dir), "FLOWBUS_DEMO": "true"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flowbus", *argv], env=env, capture_output=True, text=True,
                              timeout=120)

    out = run("keys", "create", "--name", "secours")
    assert out.returncode == 0 and "créée ; voici son secret, affiché une seule fois" in out.stdout, out.stderr
    secret = out.stdout.strip().splitlines()[-1]
    async with srv.client(secret) as api:
        assert (await api.get("/api/v1/entities")).status == 200
    out = run("keys", "list")
    key_id = next(line.split()[0] for line in out.stdout.splitlines() if "secours" in line)
    assert "active" in out.stdout
    out = run("keys", "revoke", key_id)
    assert out.returncode == 0 and "révoquée" in out.stdout
    async with srv.client(secret) as api:
        assert (await api.get("/api/v1/entities")).status == 401
    out = run("keys", "revoke", "inconnue")
    assert out.returncode == 2 and "flowbus keys revoke" in out.stderr
    out = run("keys", "create", "--name", "x", "--roles", "entite=chef")
    assert out.returncode == 2 and "ENTITY=reader|editor|admin attendu" in out.stderr
