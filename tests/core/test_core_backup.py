"""`flowbus backup` of a running embedded install, `flowbus restore` into a fresh data directory: every
document and file comes back byte-identical, the journal verifies, the connector secrets still open; the
restore refuses to overwrite, and a PostgreSQL install is pointed to its own tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowbus import documents, journal
from flowbus.api.entities import create_entity
from flowbus.app import build
from tests.support.pdfs import pdf

ROOT = Path(__file__).resolve().parents[2]


def _flowbus(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "FLOWBUS_DATA_DIR": str(data_dir), "FLOWBUS_CONFIG_DIR": str(ROOT / "config"),
               "FLOWBUS_DEMO": "true", **env}
    return subprocess.run([sys.executable, "-m", "flowbus", *args], env=environ, capture_output=True, text=True,
                          timeout=180)


async def _one(data: bytes):
    yield data


async def test_backup_while_running_then_restore_into_a_fresh_directory(runtime_factory, wait_state, tmp_path):
    rt = await runtime_factory("embedded")
    ent = await create_entity(rt, name="Commune Sauvegardée", siren=None, parent=None, actor_name="t")
    originals = {}
    for i in range(5):
        doc = await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": f"Arrêté {i}"},
                                              actor="t")
        content = pdf(f"arrêté {i} " + "x" * (i * 1000))
        await documents.attach_file(rt, doc.id, "file", filename=f"arrete-{i}.pdf", media_type="application/pdf",
                                    chunks=_one(content), actor="t")
        await documents.run_action(rt, doc.id, "start", actor="t")
        originals[doc.id] = content
    for doc_id in originals:
        await wait_state(rt, doc_id, "done", timeout=30)
    async with rt.store.transaction() as tx:
        await rt.instances.save(tx, {"id": "mailsec", "family": "mailsec", "kind": "smtp", "entity": ent.id,
                                     "settings": {"host": "smtp.example.fr", "password": "secret-de-smtp-123"}},
                                at=rt.clock.now())

    dest = tmp_path / "sauvegarde"
    out = _flowbus(rt.settings.data_dir, "backup", str(dest))  # the runtime above is still running
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Sauvegarde dans" in out.stdout and "5 documents" in out.stdout
    later = await documents.create_document(rt, entity_id=ent.id, flow_id="demo", fields={"title": "après"},
                                            actor="t")
    again = _flowbus(rt.settings.data_dir, "backup", str(dest))  # incremental: only what is new
    assert again.returncode == 0 and "6 documents" in again.stdout and "0 copiés" not in out.stdout
    assert " 0 copiés" in again.stdout or "(0 copiés" in again.stdout, again.stdout

    fresh = tmp_path / "restaure"
    out = _flowbus(fresh, "restore", str(dest))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "6 documents" in out.stdout and "journal intact." in out.stdout
    refused = _flowbus(fresh, "restore", str(dest))
    assert refused.returncode == 2 and "n'est pas vide : la restauration n'écrase rien" in refused.stderr

    restored = await build(rt.settings.model_copy(update={"data_dir": fresh}))
    try:
        for doc_id, content in originals.items():
            doc = await documents.get_document(restored, doc_id)
            assert doc.state == "done"
            assert await restored.blobs.read(doc.files_of("file")[0].blob_key) == content
        assert (await documents.get_document(restored, later.id)).fields["title"] == "après"
        async with restored.store.transaction() as tx:
            assert await journal.verify(tx) == []
            inst = await restored.instances.resolve(tx, "mailsec", ent.id)
        assert inst.settings["password"] == "secret-de-smtp-123", "the key came back with the backup"
    finally:
        await restored.close()


def test_backup_of_a_postgresql_install_points_to_its_tools(tmp_path):
    out = _flowbus(tmp_path, "backup", str(tmp_path / "b"),
                   FLOWBUS_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test")
    assert out.returncode == 2 and "pg_dump" in out.stderr and "docs/operations.md" in out.stderr
