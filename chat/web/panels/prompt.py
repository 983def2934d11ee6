"""The Prompt section: the exact prompt of the last turn and the context it uses; ticked, the same prompt
token by token, coloured by part (chat/web/prompt_tokens_html.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..prompt_tokens_html import CSS, prompt_tokens_html
from ..tabs import Tab
from ..view import NO_PROMPT_YET
from ..wiring import QUICK, Wiring


def shown_as_tokens(tab: Tab, as_tokens: bool) -> Any:
    """The prompt's tokens: drawn (and visible) only while "Show as tokens" is ticked."""
    return gr.update(value=prompt_tokens_html(tab.session) if as_tokens else "", visible=bool(as_tokens))


@dataclass
class PromptPanel:
    context: gr.Markdown
    prompt: gr.Textbox
    as_tokens: gr.Checkbox
    tokens: gr.HTML

    @classmethod
    def build(cls) -> "PromptPanel":
        with gr.Accordion("Prompt", open=False):
            context = gr.Markdown(NO_PROMPT_YET)
            prompt = gr.Textbox(label="Exact prompt of the last turn", lines=8, max_lines=30, interactive=False, buttons=["copy"],
                                elem_id="prompt-view")
            as_tokens = gr.Checkbox(False, label="Show as tokens: each piece and id, coloured by part", elem_id="prompt-as-tokens")
            tokens = gr.HTML("", visible=False, elem_id="prompt-tokens", css_template=CSS)
        return cls(context, prompt, as_tokens, tokens)

    def name(self, wiring: Wiring) -> None:
        wiring.name(prompt=self.prompt, context=self.context)

    def wire(self, wiring: Wiring) -> None:
        """The tokens drawn when ticked, and again after each answer while it is."""
        self.as_tokens.change(wiring.bind(shown_as_tokens), [wiring.state, self.as_tokens], self.tokens, **QUICK)
        wiring.after_answers(shown_as_tokens, [wiring.state, self.as_tokens], self.tokens)
