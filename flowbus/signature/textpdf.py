"""A tiny PDF writer: pages of text lines (bordereaux de signature, demo and test documents)."""

from __future__ import annotations


def _pdf_text(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_pdf(pages: list[list[str]], *, title: str = "", numbered: bool = False) -> bytes:
    """A PDF 1.4, one page per list of lines, in Helvetica (WinAnsi, so French accents show).

    ``numbered``: print « Page i / n » under each page's lines.
    """
    n = len(pages)
    font = 3 + 2 * n
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(f"{3 + 2 * i} 0 R".encode() for i in range(n))
               + f"] /Count {n} >>".encode()]
    for i, lines in enumerate(pages):
        footer = f"(Page {i + 1} / {n}) Tj\n".encode() if numbered else b""
        content = b"BT /F1 10 Tf 50 800 Td 14 TL\n" + b"".join(b"(" + _pdf_text(line) + b") Tj T*\n"
                                                              for line in lines[:55]) + footer + b"ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 {font} "
                       f"0 R >> >> /Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    objects.append(b"<< /Title (" + _pdf_text(title) + b") /Producer (flowbus) >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)


def simple_pdf(lines: list[str], *, title: str = "") -> bytes:
    """A one-page PDF with the given lines."""
    return text_pdf([lines], title=title)
