"""A timestamp authority simulator speaking RFC 3161 over HTTP, for tests and the demo (PAdES B-T, CAdES-T).

It answers ``POST /`` with ``Content-Type: application/timestamp-query`` by a real
TimeStampResp signed with the given TSA key (pyHanko's DummyTimeStamper builds the token),
so the production client (pyHanko's HTTPTimeStamper) is what gets tested.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from flowbus.signature.keys import SigningKey


class TsaSimulator:
    """``with TsaSimulator(key) as url: ...`` — listens on 127.0.0.1, a free port."""

    def __init__(self, key: SigningKey, host: str = "127.0.0.1", port: int = 0) -> None:
        cert = asn1_x509.Certificate.load(key.certificate.public_bytes(serialization.Encoding.DER))
        der_key = key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
        chain = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in key.chain]
        self._stamper = DummyTimeStamper(cert, asn1_keys.PrivateKeyInfo.load(der_key), certs_to_embed=chain)
        self.requests = 0
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415, "expected application/timestamp-query")
                    return
                try:
                    request = tsp.TimeStampReq.load(body)
                    answer = simulator._stamper.request_tsa_response(request).dump()
                except Exception:
                    self.send_error(400, "malformed TimeStampReq")
                    return
                simulator.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="tsa-sim", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
