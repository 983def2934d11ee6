"""The Gradio page: chat, skills, Stop/Retry/Undo/Clear, Instructions, Settings, Prompt.

`build_ui` only lays out components and wires them to `ui_handlers`; every browser tab gets
its own `ChatSession` through a callable `gr.State`, so tabs never see each other's text.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gradio as gr

from . import ui_handlers as handlers
from .session import ChatSession
from .settings import GenerationSettings
from .skills import SkillBook

CSS = """
#status {min-height: 1.5em; opacity: .8}
#skill-help {font-size: .9em; opacity: .8}
"""


def build_ui(engine: Any, skills: SkillBook, instructions: str, defaults: GenerationSettings, title: str = "Chat workbench") -> gr.Blocks:
    def new_session() -> ChatSession:  # a function, not a partial: gr.State deep-copies partials (and the model)
        return ChatSession(engine, skills, instructions, defaults)

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## 💬 {title}\n**Model:** {engine.name} · {engine.device}")
        session = gr.State(new_session, delete_callback=lambda s: s.stop())
        chatbot = gr.Chatbot(
            label="Chat", height=480, buttons=["copy", "copy_all"], render_markdown=True,
            sanitize_html=True, allow_tags=False, placeholder="Ask anything, or pick a **Skill** first.",
        )
        with gr.Row(equal_height=True):
            skill = gr.Dropdown(skills.names(), value=skills.default.name, label="Skill", scale=1, min_width=180)
            message = gr.Textbox(label="Message", placeholder="Type a message, Enter sends (Shift+Enter: new line). /retry retries.",
                                 lines=1, max_lines=10, scale=4, autofocus=True)
            send_button = gr.Button("Send", variant="primary", scale=0, min_width=90)
        skill_help = gr.Markdown(skills.default.description, elem_id="skill-help")
        with gr.Row():
            stop_button = gr.Button("Stop", variant="stop", size="sm")
            retry_button = gr.Button("Retry", size="sm")
            undo_button = gr.Button("Undo", size="sm")
            clear_button = gr.Button("Clear", size="sm")
        status = gr.Markdown("", elem_id="status")
        with gr.Accordion("Instructions", open=False):
            instructions_box = gr.Textbox(value=instructions, label="System instructions", lines=4, max_lines=16)
            reset_button = gr.Button("Reset to default", size="sm")
        with gr.Accordion("Settings", open=False):
            setting_inputs = _settings_controls(defaults)
        with gr.Accordion("Prompt", open=False):
            context_line = gr.Markdown(handlers.prompt_view(new_session())[1])
            prompt_box = gr.Textbox(label="Exact prompt of the last turn", lines=8, max_lines=30, interactive=False, buttons=["copy"])
        with gr.Accordion("Conversation file", open=False):
            with gr.Row():
                download_button = gr.DownloadButton("Download conversation (JSON)", size="sm")
                upload_button = gr.UploadButton("Upload conversation (JSON)", file_types=[".json"], size="sm")

        outputs = [chatbot, message, status, prompt_box, context_line]
        controls = [instructions_box, *setting_inputs]
        send_args = dict(fn=handlers.send, inputs=[session, message, skill, *controls], outputs=outputs, show_progress="minimal")
        send_events = [message.submit(**send_args), send_button.click(**send_args)]
        retry_event = retry_button.click(handlers.retry, [session, *controls], outputs, show_progress="minimal")
        for event in (*send_events, retry_event):
            event.then(handlers.download, session, download_button, queue=False, show_progress="hidden")
        stop_button.click(handlers.stop, session, None, queue=False, cancels=[*send_events, retry_event])
        undo_button.click(handlers.undo, session, outputs, queue=False, cancels=[*send_events, retry_event])
        clear_button.click(handlers.clear, session, outputs, queue=False, cancels=[*send_events, retry_event])
        upload_button.upload(handlers.upload, [session, upload_button], [*outputs, instructions_box], queue=False)
        reset_button.click(partial(handlers.reset_instructions, default=instructions), session, instructions_box, queue=False)
        skill.change(handlers.describe_skill, [session, skill], skill_help, queue=False, show_progress="hidden")
        instructions_box.blur(handlers.apply_controls, [session, *controls], None, queue=False, show_progress="hidden")
    return demo


def _settings_controls(defaults: GenerationSettings) -> list[gr.components.Component]:
    """One control per GenerationSettings field, in `ui_handlers.SETTING_NAMES` order."""
    return [
        gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="Temperature", info="0 = greedy (always the likeliest token)"),
        gr.Slider(0.05, 1, value=defaults.top_p, step=0.05, label="Top p", info="sample from the tokens holding this much probability"),
        gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top k", info="… and from at most this many (0 = no limit)"),
        gr.Slider(1, 4096, value=defaults.max_new_tokens, step=1, label="Max new tokens"),
        gr.Slider(1, 2, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty", info="1 = off"),
        gr.Slider(0, 10, value=defaults.no_repeat_ngram_size, step=1, label="No-repeat n-gram size", info="0 = off"),
        gr.Slider(1, 8, value=defaults.num_beams, step=1, label="Beams", info=">1: beam search; the answer appears when complete"),
        gr.Number(value=defaults.seed, label="Seed", info="empty = random", precision=0),
    ]
