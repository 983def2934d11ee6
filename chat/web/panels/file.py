"""The Conversation file section: download the chat as JSON (every version, with how each answer was made)
or as Markdown (the versions shown); upload a JSON file to continue it."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ...errors import ChatError
from ...files import conversation_document, load_conversation, markdown
from ...session import ChatSession
from ..handlers import warn
from ..tabs import Tab
from ..view import PAGE, PageUpdate, page
from ..wiring import QUICK, Wiring

DOWNLOADS = "chat-workbench-downloads"  # the folder, under the system's temporary one
TITLE_CHARS = 60


def download(tab: Tab) -> tuple[str, str]:
    """Writes the conversation for the download buttons: (JSON with every version, Markdown of the shown path)."""
    session = tab.session
    folder = Path(tempfile.gettempdir()) / DOWNLOADS
    folder.mkdir(exist_ok=True)
    stem = folder / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}-{id(session):x}"
    document = conversation_document(session)
    json_path, markdown_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    markdown_path.write_text(markdown(session, session.model, session.skills.default.name, _title_of(session)),
                             encoding="utf-8")
    return str(json_path), str(markdown_path)


def _title_of(session: ChatSession) -> str:
    first = next((m.get("typed", m["content"]) for m in session.history if m["role"] == "user"), "")
    line = " ".join(first.split())
    return (line[:TITLE_CHARS] + "…" if len(line) > TITLE_CHARS else line) or "Conversation"


def upload(tab: Tab, file: Any) -> PageUpdate:
    """Loads a conversation file; a bad file is a warning and the current chat stays."""
    session = tab.session
    path = getattr(file, "name", file)
    before = session.instructions
    try:
        session.load_messages(load_conversation(path), Path(path).name)
        tab.focus = None
    except ChatError as error:
        warn(str(error))
    shown = page(tab)
    if session.instructions != before:  # the box is written only if the file brought instructions: an edit there stays
        shown["instructions"] = session.instructions
    return shown


@dataclass
class FilePanel:
    download_json: gr.DownloadButton
    download_markdown: gr.DownloadButton
    upload_button: gr.UploadButton

    @classmethod
    def build(cls) -> "FilePanel":
        with gr.Accordion("Conversation file", open=False):
            with gr.Row():
                download_json = gr.DownloadButton("Download conversation (JSON)", size="sm")
                download_markdown = gr.DownloadButton("Download as Markdown", size="sm")
                upload_button = gr.UploadButton("Upload conversation (JSON)", file_types=[".json"], size="sm",
                                                elem_id="upload-conversation")
        return cls(download_json, download_markdown, upload_button)

    def wire(self, wiring: Wiring, uploading: Callable[..., PageUpdate] = upload, inputs: tuple[Any, ...] = (),
             shows: tuple[str, ...] = ()) -> Any:
        """Upload (with `uploading`, which takes `inputs` after the file and also shows `shows`); returns the event.
        Queued, unlike the other quick events: only a queued event's gr.Warning reaches the page, and a bad file must say so."""
        return self.upload_button.upload(wiring.bind(uploading, keep=True), [wiring.state, self.upload_button, *inputs],
                                  [*wiring.outputs(*PAGE, "instructions", *shows), wiring.state], api_visibility="private")

    def redraw_after(self, wiring: Wiring, events: list[Any]) -> None:
        """The download buttons hold the chat shown: written again after each of `events`."""
        for event in events:
            event.then(wiring.bind(download), wiring.state, [self.download_json, self.download_markdown], **QUICK)
