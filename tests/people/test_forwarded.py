"""Behind the operator's reverse proxy (FLOWBUS_TRUSTED_PROXIES): the client's address and HTTPS are read from
X-Forwarded-For / X-Forwarded-Proto — failures are counted per real client, HSTS is sent — and from anyone else
those headers change nothing."""

from __future__ import annotations

import aiohttp

from flowbus import forwarded

WRONG = {"Authorization": "Bearer fbk_not-a-key"}


async def _statuses(url: str, count: int, **headers: str) -> list[int]:
    out = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.get(f"{url}/api/v1/entities", headers={**WRONG, **headers}) as r:
                out.append(r.status)
    return out


async def test_forwarded_headers_are_believed_from_a_trusted_proxy_only(runtime_factory, server_factory):
    direct = await server_factory(await runtime_factory("embedded", workers=False))
    statuses = await _statuses(direct.url, 9, **{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert statuses[-1] == 429, "counted under the real peer, whatever the header says"
    assert (await _statuses(direct.url, 1, **{"X-Forwarded-For": "203.0.113.10"}))[0] == 429, "same peer, same count"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{direct.url}/connexion", headers={"X-Forwarded-Proto": "https"}) as r:
            assert "Strict-Transport-Security" not in r.headers

    rt = await runtime_factory("embedded", workers=False, trusted_proxies="127.0.0.1",
                               data_dir=direct.rt.settings.data_dir.parent / "var2")
    proxied = await server_factory(rt)
    assert (await _statuses(proxied.url, 9, **{"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}))[-1] == 429
    # another client behind the same proxy is another address
    assert (await _statuses(proxied.url, 1, **{"X-Forwarded-For": "203.0.113.10"})) == [401]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{proxied.url}/connexion", headers={"X-Forwarded-Proto": "https"}) as r:
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "Secure" in r.headers.get("Set-Cookie", ""), "the pre-session cookie is Secure over HTTPS"
        async with http.get(f"{proxied.url}/connexion") as r:
            assert "Strict-Transport-Security" not in r.headers


def test_trusted_proxies_setting_is_checked():
    assert [str(n) for n in forwarded.parse("10.0.0.5, 10.1.0.0/16")] == ["10.0.0.5/32", "10.1.0.0/16"]
    import pytest

    from flowbus.settings import Settings
    with pytest.raises(ValueError, match="n'est ni une adresse IP ni un réseau"):
        Settings(_env_file=None, trusted_proxies="proxy.interne")
