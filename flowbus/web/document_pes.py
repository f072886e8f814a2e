"""The PES viewer (French): a document's PES_Aller as people read it — header, bordereaux, pièces, lignes, tiers,
amounts — and each PJ decoded (base64, gzip) for download; which files of a document get « Visualiser le PES ».

Same rights as reading the document (``flowbus.web.admin.document_for(request, "reader")``).  The file is streamed
from the blob store into ``flowbus.connectors.tdt.pes_view`` in a worker thread (one thread per request: an lxml
parser stays in the thread that feeds it); a file over ``FLOWBUS_PES_VIEW_MAX_SIZE`` (200 Mo, the PES flow's own limit;
S²LOW refuses past 150 MiB) is refused in French before any reading.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web
from lxml import etree

from flowbus.connectors.tdt.pes_view import ALLER_NS, PesViewReader, PjExtractor
from flowbus.errors import ValidationError
from flowbus.web import console, french

log = structlog.get_logger(__name__)

SNIFF_BYTES = 8192  # enough to reach the root element past the XML declaration and comments
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_SPOOL_IN_MEMORY = 1 << 20
DOMAIN_WORDS = {"depense": ("dépense", "Mandat"), "recette": ("recette", "Titre")}


def _looks_xml(ref: Any) -> bool:
    return ref.media_type in ("application/xml", "text/xml") or ref.filename.lower().endswith(".xml")


async def _sniff(rt: Any, ref: Any) -> bool:
    """Whether the file's root element is a PES_Aller (reads its first few kilobytes only)."""
    parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True, load_dtd=False)
    read = 0
    try:
        async with aclosing(_chunks(rt, ref.blob_key)) as chunks:
            async for chunk in chunks:
                parser.feed(chunk[:SNIFF_BYTES - read])
                read += len(chunk)
                for _event, element in parser.read_events():
                    return bool(element.tag == f"{{{ALLER_NS}}}PES_Aller")
                if read >= SNIFF_BYTES:
                    return False
    except etree.XMLSyntaxError:
        return False
    except Exception as exc:  # noqa: BLE001 - a file that cannot be read gets no link; the page still shows
        log.warning("pes_view.sniff_failed", document_id=ref.document_id, field=ref.field, error=str(exc))
        return False
    return False


async def _chunks(rt: Any, key: str) -> AsyncIterator[bytes]:
    stream = rt.blobs.open(key)
    try:
        async for chunk in stream:
            yield chunk
    finally:
        if hasattr(stream, "aclose"):
            await stream.aclose()


async def pes_files(rt: Any, flow: Any, doc: Any) -> set[tuple[str, int]]:
    """(field, index) of the document's files that are a PES_Aller: declared so by their field
    (``content: pes_aller``), or XML files whose root element says so."""
    out: set[tuple[str, int]] = set()
    for ref in doc.files:
        field = flow.field(ref.field) if flow is not None and flow.has_field(ref.field) else None
        if field is not None and getattr(field, "content", None) == "pes_aller":
            out.add((ref.field, ref.index))
        elif _looks_xml(ref) and ref.size > 0 and await _sniff(rt, ref):
            out.add((ref.field, ref.index))
    return out


async def _read_in_thread(rt: Any, ref: Any, target: Any) -> None:
    """Feed the blob's chunks to ``target.feed`` in one worker thread, fetching each chunk on the event loop;
    stops early once ``target.done`` says the rest is not needed."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()  # set when the request goes away: the thread stops at its next chunk
    async with aclosing(_chunks(rt, ref.blob_key)) as chunks:
        iterator = aiter(chunks)

        async def next_chunk() -> bytes | None:
            return await anext(iterator, None)

        def work() -> None:
            while not stop.is_set() and not getattr(target, "done", False):
                chunk = asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()
                if chunk is None:
                    return
                target.feed(chunk)

        thread = loop.run_in_executor(None, work)
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:  # the request went away: let the thread stop before closing the stream
            stop.set()
            await asyncio.wait([thread])
            raise


def _file_of(request: web.Request, doc: Any) -> Any:
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound(text="Fichier introuvable.") from None
    files = doc.files_of(request.match_info["field"])
    if index < 0 or index >= len(files):
        raise web.HTTPNotFound(text="Fichier introuvable.")
    return files[index]


def _too_big(rt: Any, ref: Any) -> str | None:
    limit = rt.settings.pes_view_max_size
    if ref.size > limit:
        return (f"Ce fichier fait {french.size(ref.size)} : la visualisation est limitée aux fichiers de "
                f"{french.size(limit)} (réglage FLOWBUS_PES_VIEW_MAX_SIZE). Téléchargez-le pour l'ouvrir dans votre "
                f"logiciel financier.")
    return None


def _links(view: Any) -> tuple[dict[str, int], dict[str, list[tuple[str, str]]]]:
    """IdUnique → the PJ's position; IdUnique → the pièces that point to it (anchor, words)."""
    positions = {pj.id_unique: pj.position for pj in view.pjs if pj.id_unique}
    pieces: dict[str, list[tuple[str, str]]] = {}
    for i, b in enumerate(view.bordereaux, 1):
        for j, p in enumerate(b.pieces, 1):
            for ref in p.pj_refs:
                pieces.setdefault(ref, []).append(
                    (f"piece-{i}-{j}", f"{DOMAIN_WORDS[b.domain][1].lower()} n° {p.numero}, bordereau n° {b.numero}"))
    return positions, pieces


async def viewer(request: web.Request) -> web.Response:
    from flowbus.web.admin import document_for, document_title  # the document page's own access rule
    rt = console.runtime(request)
    who, doc, _role = await document_for(request, "reader")
    ref = _file_of(request, doc)
    ctx: dict[str, Any] = {"doc": doc, "ref": ref, "title": document_title(doc, rt.flows), "domains": DOMAIN_WORDS}
    problem = _too_big(rt, ref)
    status = 413 if problem else 200
    if problem is None:
        reader = PesViewReader()
        try:
            await _read_in_thread(rt, ref, reader)
            view = reader.result()
        except ValidationError as exc:
            problem, status = f"Ce fichier ne peut pas être affiché : {exc.message}.", 422
            log.warning("pes_view.unreadable", document_id=doc.id, field=ref.field, error=exc.message)
        else:
            positions, pieces = _links(view)
            ctx.update(view=view, pj_positions=positions, pj_pieces=pieces)
    return await console.page(request, "admin_document_pes.html", who=who, status=status, problem=problem, **ctx)


def _download_name(extractor: PjExtractor, position: int) -> str:
    name = (extractor.nom or extractor.id_unique or f"pj-{position + 1}").strip()
    name = re.sub(r'[\x00-\x1f\x7f/\\"]', "_", name)[:200]
    return name or f"pj-{position + 1}"


async def pj_download(request: web.Request) -> web.StreamResponse:
    from flowbus.web.admin import document_for
    rt = console.runtime(request)
    _who, doc, _role = await document_for(request, "reader")
    ref = _file_of(request, doc)
    back = f"/admin/documents/{doc.id}/pes/{ref.field}/{ref.index}"
    problem = _too_big(rt, ref)
    if problem:
        raise console.failed(back, problem)
    try:
        position = int(request.match_info["position"])
    except ValueError:
        raise web.HTTPNotFound(text="Pièce justificative introuvable.") from None
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        extractor = PjExtractor(position, spool.write)
        try:
            await _read_in_thread(rt, ref, extractor)
            if not extractor.done:
                extractor.finish()
        except ValidationError as exc:
            log.warning("pes_view.pj_unreadable", document_id=doc.id, field=ref.field, position=position,
                        error=exc.message)
            raise console.failed(back, f"La pièce justificative n° {position + 1} ne peut pas être extraite : "
                                       f"{exc.message}.") from None
        if not extractor.found:
            raise web.HTTPNotFound(text="Pièce justificative introuvable.")
        size = spool.tell()
        spool.seek(0)
        media = (extractor.media_type or "").strip().lower()
        resp = web.StreamResponse(headers={
            "Content-Type": media if _MEDIA_TYPE.fullmatch(media) else "application/octet-stream",
            "Content-Length": str(size), "X-Content-Type-Options": "nosniff",
            # always an attachment: a PJ is whatever the finance software put there, never rendered by this site
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(_download_name(extractor, position))}"})
        await resp.prepare(request)
        while chunk := spool.read(1 << 16):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def setup(app: web.Application, runtime: Any) -> None:
    app.router.add_get("/admin/documents/{id}/pes/{field}/{index}", viewer)
    app.router.add_get("/admin/documents/{id}/pes/{field}/{index}/pj/{position}", pj_download)
