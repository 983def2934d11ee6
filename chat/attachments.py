"""Attached text: a file dropped beside the message box becomes the message's material, with its name.

Text files (.txt, .md, source code: any UTF-8 text) are read as they are, a PDF's text through pypdf.
The file goes into the message fenced, its fence longer than any run in it, so that the skill's template
(Summarize: "the text between the fences") reads it as material; the session then checks that it fits
the model's context before sending (`ChatSession.check_fits`), instead of its end being cut off.

>>> with_attachment("What does it say?", read_attachment("notes.md"))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ChatError

MAX_FILE_BYTES = 20 * 1024 * 1024  # larger is no chat message (a model window holds ~4 bytes a token)
TEXT_TYPES = (".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".toml", ".ini", ".xml", ".html",
              ".py", ".ipynb", ".js", ".ts", ".java", ".c", ".h", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".sh",
              ".sql", ".r", ".jl", ".kt", ".swift", ".tex", ".log", ".pdf")  # what the page's file box offers


class AttachmentError(ChatError):
    """A file that can't be attached: the message names it and says why."""


@dataclass(frozen=True)
class Attachment:
    name: str  # the file's name, as the model is told it
    text: str


def read_attachment(path: str | Path, name: str | None = None) -> Attachment:
    """The file's text (`name`: what to call it, by default its file name). Refused (AttachmentError) when it is no
    text: binary, another encoding than UTF-8, a PDF without a text layer."""
    path = Path(path)
    name = name or path.name
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AttachmentError(f"{name}: {size / 2**20:.0f} MB is more text than any model's context holds "
                                  f"(at most {MAX_FILE_BYTES // 2**20} MB)")
        data = path.read_bytes()
    except OSError as error:
        raise AttachmentError(f"{name}: can't read the file ({error.strerror or error})") from None
    text = _pdf_text(data, name) if data.startswith(b"%PDF-") else _plain_text(data, name)
    if not text.strip():
        raise AttachmentError(f"{name}: the file holds no text")
    return Attachment(name, text)


def with_attachment(typed: str, attachment: Attachment) -> str:
    """The message: what the user typed (if anything), then the file, named and fenced."""
    fence = "`" * max(3, _longest_run(attachment.text) + 1)
    block = f"{attachment.name}:\n{fence}\n{attachment.text.rstrip()}\n{fence}"
    return f"{typed.rstrip()}\n\n{block}" if typed.strip() else block


def split_attachment(text: str, name: str) -> tuple[str, str]:
    """(what the user typed, the file's block) of a message `with_attachment` made (no block found: all of it typed)."""
    if text.startswith(f"{name}:\n```"):
        return "", text
    at = text.rfind(f"\n\n{name}:\n```")
    return (text[:at], text[at + 2:]) if at >= 0 else (text, "")


def _plain_text(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise AttachmentError(f"{name}: not a text file (it holds binary data); attach text, Markdown, code or a PDF")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise AttachmentError(f"{name}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save it as UTF-8") from None


def _pdf_text(data: bytes, name: str) -> str:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        pages = [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as error:
        raise AttachmentError(f"{name}: can't read this PDF ({error})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise AttachmentError(f"{name}: this PDF has no text layer (a scan?): there is no text to attach")
    return text


def _longest_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)
