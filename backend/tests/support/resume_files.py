"""Real resume files for tests: a DOCX and a minimal PDF carrying a given text."""

import io
import zlib

from docx import Document

RESUME_TEXT = (
    "Jordan Rivers - Backend Engineer. 6 years of experience building REST APIs with Python, "
    "FastAPI and PostgreSQL on AWS. Docker and Kubernetes in production. Acme 2019 - present."
)


def docx_bytes(text: str) -> bytes:
    """A real DOCX document with ``text`` as its paragraphs."""
    document = Document()
    for line in text.split(". "):
        document.add_paragraph(line)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_bytes(text: str) -> bytes:
    """A minimal valid one-page PDF whose content stream shows ``text`` (Helvetica)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return _pdf(f"BT /F1 10 Tf 40 700 Td ({escaped}) Tj ET".encode("latin-1"), pages=1)


# Text-showing operators per page of the costly PDF: under pypdf's own budget of 2,000,000
# content-stream tokens, so pypdf parses all of them, page after page.
COSTLY_PDF_OPERATORS = 600_000
COSTLY_PDF_PAGES = 30


def costly_pdf_bytes() -> bytes:
    """A ~10 KB valid PDF that costs pypdf many minutes of CPU (and ~300 MB) to extract.

    Its one content stream, ``(a) Tj`` 600,000 times, compresses about 600:1 and is shared by 30
    pages; pypdf decodes and interprets it again for every page (10-20 s of CPU each on a
    2-core machine), and each page stays under every limit pypdf has.
    """
    content = b"BT /F1 10 Tf 40 700 Td " + b"(a) Tj " * COSTLY_PDF_OPERATORS + b"ET"
    return _pdf(content, pages=COSTLY_PDF_PAGES)


def _pdf(content: bytes, pages: int) -> bytes:
    """A valid PDF whose ``pages`` pages all show the one FlateDecode ``content`` stream."""
    stream = zlib.compress(content, 9)
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + index) for index in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        # Page size and font are inherited from here, so each page object stays small.
        b"<< /Type /Pages /Kids [%s] /Count %d /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> >>" % (kids, pages),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /Contents 3 0 R >>"] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
