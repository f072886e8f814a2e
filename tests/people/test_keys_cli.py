"""`flowbus keys`: the operator creates an administrator key on the server when the last one is lost, lists
and revokes keys; the new key opens the API, the revoked one no longer does."""

from __future__ import annotations

import pytest

from flowbus.cli import main


async def test_lost_key_recovered_on_the_server(runtime_factory, server_factory, monkeypatch, capsys):
    rt = await runtime_factory("embedded", workers=False)
    srv = await server_factory(rt)
    monkeypatch.setenv("FLOWBUS_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("FLOWBUS_CONFIG_DIR", str(rt.settings.config_dir))
    monkeypatch.setenv("FLOWBUS_DEMO", "true")

    def run(*argv: str) -> tuple[int, str, str]:
        import threading
        out: dict = {}

        def target() -> None:  # main() runs its own event loop: not in the test's
            try:
                out["code"] = main(list(argv))
            except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
                out["error"] = exc
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]
        captured = capsys.readouterr()
        return out["code"], captured.out, captured.err

    code, out, _ = run("keys", "create", "--name", "secours")
    assert code == 0 and "créée ; voici son secret, affiché une seule fois" in out
    secret = out.strip().splitlines()[-1]
    async with srv.client(secret) as api:
        assert (await api.get("/api/v1/entities")).status == 200
    code, out, _ = run("keys", "list")
    key_id = next(line.split()[0] for line in out.splitlines() if "secours" in line)
    assert "active" in out
    code, out, _ = run("keys", "revoke", key_id)
    assert code == 0 and "révoquée" in out
    async with srv.client(secret) as api:
        assert (await api.get("/api/v1/entities")).status == 401
    code, _, err = run("keys", "revoke", "inconnue")
    assert code == 2 and "flowbus keys revoke" in err
    with pytest.raises(SystemExit):
        run("keys", "create", "--name", "x", "--roles", "entite=chef")
