"""Small real files of each evidence kind, built from their specifications: for `etl demo`'s
attachments and for tests of `etl.media.files`. Each opens in the program its type names (a Word
document with a line of text, a one-page PDF, an 8x8 JPEG ...), so what the store judges by
content is what a person would see; no third-party writer is needed except openpyxl (already a
dependency) for `.xlsx`.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from xml.sax.saxutils import escape

__all__ = ["docx_bytes", "gif_bytes", "jpeg_bytes", "mp4_header", "ole_header", "pdf_bytes",
           "png_bytes", "pptx_bytes", "xlsx_bytes"]

_ZIP_DATE = (2025, 1, 1, 0, 0, 0)  # fixed, so the same text gives the same bytes (and sha256)


def _zip(entries: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in entries:
            z.writestr(zipfile.ZipInfo(name, _ZIP_DATE), text.encode("utf-8"),
                       compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"


def docx_bytes(text: str = "管理制度", *, late_part: bool = False) -> bytes:
    """A Word 2007+ document with one paragraph. `late_part=True` puts five other parts before
    `word/document.xml`, as some writers do: then only the whole zip shows it is a document."""
    entries = [
        ("[Content_Types].xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
         '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
         '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
         '<Default Extension="xml" ContentType="application/xml"/>'
         '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
         'officedocument.wordprocessingml.document.main+xml"/></Types>'),
        ("_rels/.rels",
         f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_RELS_NS}">'
         f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="word/document.xml"/></Relationships>'),
    ]
    if late_part:
        entries += [(f"customXml/item{i}.xml", f"<item n='{i}'/>") for i in range(1, 6)]
    entries.append((
        "word/document.xml",
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f'<w:body><w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p></w:body></w:document>'))
    return _zip(entries)


def pptx_bytes(title: str = "风险四色图") -> bytes:
    """A PowerPoint 2007+ package: content types, relationships, `ppt/presentation.xml`."""
    return _zip([
        ("[Content_Types].xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
         '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
         '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
         '<Default Extension="xml" ContentType="application/xml"/>'
         '<Override PartName="/ppt/presentation.xml" ContentType="application/vnd.openxmlformats-'
         'officedocument.presentationml.presentation.main+xml"/></Types>'),
        ("_rels/.rels",
         f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_RELS_NS}">'
         f'<Relationship Id="rId1" Type="{_OFFICE_DOC}" Target="ppt/presentation.xml"/></Relationships>'),
        ("ppt/presentation.xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
         '<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main">'
         f'<!-- {escape(title)} --></p:presentation>'),
    ])


def xlsx_bytes(rows: list[list[object]] | None = None) -> bytes:
    """An Excel 2007+ workbook written by openpyxl."""
    from openpyxl import Workbook

    wb = Workbook()
    for row in rows or [["培训签到", "姓名"], [1, "张三"]]:
        wb.active.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def pdf_bytes(text: str = "Safety rule") -> bytes:
    """A one-page PDF 1.4 showing `text` (ASCII: the base-14 Helvetica has no Chinese), with a
    correct cross-reference table."""
    body = text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(") \
        .replace(b")", b"\\)")
    stream = b"BT /F1 18 Tf 72 720 Td (" + body + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
            .encode())
    return bytes(out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A PNG of one colour (8-bit RGB, no interlace)."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def gif_bytes() -> bytes:
    """A 1x1 GIF89a: two-colour global table, one image, LZW minimum code size 2."""
    return (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")


def jpeg_bytes() -> bytes:
    """An 8x8 grey baseline JPEG (JFIF): one component, flat quantisation, one-code Huffman
    tables (DC category 0, AC end-of-block): every decoder shows a grey square."""
    def segment(marker: int, data: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + bytes([1] * 64)
    sof0 = struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    dht = b"\x00" + one_code + b"\x10" + one_code
    sos = b"\x01\x01\x00\x00\x3f\x00"
    scan = b"\x3f"  # DC diff category 0 ("0"), end of block ("0"), padded with 1 bits
    return (b"\xff\xd8" + segment(0xE0, app0) + segment(0xDB, dqt) + segment(0xC0, sof0)
            + segment(0xC4, dht) + segment(0xDA, sos) + scan + b"\xff\xd9")


def mp4_header(brand: bytes = b"isom") -> bytes:
    """The start of an MP4 file: an `ftyp` box (major brand, compatible brands) and the header
    of an `mdat` box that claims the rest of the file; what follows is media data."""
    ftyp = brand + struct.pack(">I", 0x200) + b"isomiso2mp41"
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + struct.pack(">I", 1) + b"mdat"


def ole_header(kind: str = "doc") -> bytes:
    """The first two sectors of an Office 97-2003 (OLE compound) file: the compound file header
    and the start of a Word (`doc`: the FIB's magic EC A5) or other stream. Enough for a
    judgement by magic bytes; not a document anyone can open."""
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    header[0x18:0x1E] = b"\x3e\x00\x03\x00\xfe\xff"  # minor/major version, byte order
    header[0x1E:0x20] = b"\x09\x00"  # sector size 2^9
    first = {"doc": b"\xec\xa5\xc1\x00", "xls": b"\x09\x08\x10\x00\x00\x06\x05\x00"}.get(
        kind, b"\x00\x00\x00\x00")
    return bytes(header) + first + bytes(512 - len(first))
