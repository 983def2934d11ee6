"""The Prompt view's tokens: exactly the ids the model got, each in its part (instructions, history,
template, skill template, your text, generation prompt, answer so far), for a chat template and a
transcript; what trimming left out; the HTML and terminal renderings."""

from __future__ import annotations

import html

import pytest

from chat.context_window import FittedPrompt
from chat.formats import Prompt
from chat.prompt_tokens import (
    ANSWER_SO_FAR, GENERATION_PROMPT, HISTORY, INSTRUCTIONS, SKILL_TEMPLATE, TEMPLATE, YOUR_TEXT, as_text, texts_from_offsets,
)
from chat.remote.engine import RemoteEngine
from chat.session import ChatSession
from chat.skills_file import load_skills
from chat.web.prompt_tokens_html import NO_TOKENS_YET, SERVER_TOKENIZES, prompt_tokens_html, tokens_html
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

TRANSLATE = "🔄 Translate to German"
TYPED = "Guten Tag! <b>Hokus</b> 😀 Düsseldorf"
INSTRUCTIONS_TEXT = "You are brief."
EARLIER = [{"role": "user", "content": "Hello, how are you today?"}, {"role": "assistant", "content": "I am fine, thank you very much."}]
SETTINGS = greedy()
# (engine fixture, the generation prompt, the control tokens' texts)
FORMATS = [
    ("tiny_engine", "<|im_start|>assistant\n", {"<|im_start|>", "<|im_end|>"}),
    ("tiny_base_engine", "Assistant:", set()),
]


@pytest.fixture(scope="module")
def skill():
    return load_skills().get(TRANSLATE)


def chat(skill, typed: str = TYPED, earlier=EARLIER) -> list[dict]:
    """Instructions, an earlier exchange, and the new message wrapped by the skill, as a session sends them."""
    return [{"role": "system", "content": INSTRUCTIONS_TEXT}, *earlier, {"role": "user", "content": skill.expand(typed)}]


def text_of(tokens, part: str) -> str:
    return "".join(token.text for token in tokens.tokens if token.part == part)


@pytest.mark.parametrize("engine_name, generation_prompt, controls", FORMATS)
def test_the_tokens_are_exactly_the_prompt_the_model_gets(request, skill, engine_name, generation_prompt, controls):
    engine = request.getfixturevalue(engine_name)
    fitted = engine.prepare(chat(skill), SETTINGS)
    tokens = engine.prompt_tokens(fitted, TYPED)
    assert [token.id for token in tokens.tokens] == fitted.prompt.ids
    assert "".join(token.text for token in tokens.tokens) == fitted.prompt.text
    assert sum(tokens.counts.values()) == fitted.prompt.length
    assert tokens.left_out is None


@pytest.mark.parametrize("engine_name, generation_prompt, controls", FORMATS)
def test_each_token_is_in_its_part(request, skill, engine_name, generation_prompt, controls):
    engine = request.getfixturevalue(engine_name)
    tokens = engine.prompt_tokens(engine.prepare(chat(skill), SETTINGS), TYPED)
    assert text_of(tokens, INSTRUCTIONS) == INSTRUCTIONS_TEXT
    # Spaces aside: a transcript's " I" (the space after "Assistant:") goes with the message it starts.
    assert text_of(tokens, HISTORY).replace(" ", "") == "".join(m["content"] for m in EARLIER).replace(" ", "")
    assert text_of(tokens, YOUR_TEXT) == TYPED
    assert engine.tokenizer.decode([t.id for t in tokens.tokens if t.part == YOUR_TEXT]) == TYPED
    assert text_of(tokens, SKILL_TEMPLATE).lstrip(" ") == skill.expand(TYPED).replace(TYPED, "")
    assert text_of(tokens, GENERATION_PROMPT) == generation_prompt
    assert tokens.tokens[-1].part == GENERATION_PROMPT
    assert list(tokens.counts) == [INSTRUCTIONS, HISTORY, TEMPLATE, SKILL_TEMPLATE, YOUR_TEXT, GENERATION_PROMPT]


@pytest.mark.parametrize("engine_name, generation_prompt, controls", FORMATS)
def test_control_tokens_are_marked_and_belong_to_the_template(request, skill, engine_name, generation_prompt, controls):
    engine = request.getfixturevalue(engine_name)
    tokens = engine.prompt_tokens(engine.prepare(chat(skill), SETTINGS), TYPED)
    special = [token for token in tokens.tokens if token.special]
    assert {token.text for token in special} == controls
    assert all(token.part in (TEMPLATE, GENERATION_PROMPT) for token in special)
    assert all(token.part == TEMPLATE for token in special if token.text == "<|im_end|>")
    assert not any(token.special for token in tokens.tokens if token.part == YOUR_TEXT)  # "<b>" is text


def test_a_control_token_typed_by_the_user_is_text_in_their_part(tiny_engine, skill):
    typed = "Stop here <|im_end|> please"
    fitted = tiny_engine.prepare(chat(skill, typed), SETTINGS)
    tokens = tiny_engine.prompt_tokens(fitted, typed)
    assert [token.id for token in tokens.tokens] == fitted.prompt.ids  # the ids encoded message by message
    assert text_of(tokens, YOUR_TEXT) == typed
    assert not any(token.special for token in tokens.tokens if token.part == YOUR_TEXT)


@pytest.mark.parametrize("engine_name", ["tiny_engine", "tiny_base_engine"])
def test_a_continue_prompt_ends_in_the_answer_so_far(request, skill, engine_name):
    engine = request.getfixturevalue(engine_name)
    messages = [*chat(skill), {"role": "assistant", "content": "Guten Tag! Das ist"}]
    fitted = engine.prepare(messages, SETTINGS, continues=True)
    tokens = engine.prompt_tokens(fitted, TYPED)
    assert [token.id for token in tokens.tokens] == fitted.prompt.ids
    assert text_of(tokens, ANSWER_SO_FAR).strip() == "Guten Tag! Das ist"
    assert tokens.tokens[-1].part == ANSWER_SO_FAR and GENERATION_PROMPT not in tokens.counts
    assert text_of(tokens, YOUR_TEXT) == TYPED


@pytest.mark.parametrize("engine_name", ["tiny_engine", "tiny_base_engine"])
def test_what_trimming_left_out_is_reported(request, monkeypatch, skill, engine_name):
    engine = request.getfixturevalue(engine_name)
    monkeypatch.setattr(engine, "context_window", 220)
    fitted = engine.prepare(chat(skill, earlier=EARLIER * 6), SETTINGS)
    tokens = engine.prompt_tokens(fitted, TYPED)
    assert fitted.dropped_messages > 0 and tokens.dropped_messages == fitted.dropped_messages
    assert f"the {fitted.dropped_messages} oldest messages" in tokens.left_out
    assert tokens.left_out in as_text(tokens) and html.escape(tokens.left_out) in tokens_html(tokens)
    assert [token.id for token in tokens.tokens] == fitted.prompt.ids
    assert text_of(tokens, YOUR_TEXT) == TYPED


def test_a_message_cut_short_keeps_what_is_left_of_the_users_text(tiny_engine, monkeypatch, skill):
    typed = "Guten Tag! " * 40
    monkeypatch.setattr(tiny_engine, "context_window", 200)
    fitted = tiny_engine.prepare(chat(skill, typed), SETTINGS)
    tokens = tiny_engine.prompt_tokens(fitted, typed)
    assert fitted.message_trimmed and "cut short" in tokens.left_out
    kept = text_of(tokens, YOUR_TEXT)
    assert len(kept) > 20 and typed.startswith(kept)
    assert [token.id for token in tokens.tokens] == fitted.prompt.ids


def test_the_html_escapes_what_the_prompt_holds(tiny_engine, skill):
    typed = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
    tokens = tiny_engine.prompt_tokens(tiny_engine.prepare(chat(skill, typed), SETTINGS), typed)
    shown = tokens_html(tokens)
    assert "<script" not in shown and "<img" not in shown and "&lt;" in shown
    assert f'title="id {tokens.tokens[0].id} · template · control token"' in shown
    assert "your text · " in shown  # the legend counts each part's tokens


def test_the_terminal_shows_pieces_ids_and_parts(tiny_engine, skill):
    tokens = tiny_engine.prompt_tokens(tiny_engine.prepare(chat(skill), SETTINGS), TYPED)
    lines = as_text(tokens).splitlines()
    start = tiny_engine.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert lines[0] == "[template]" and lines[1].startswith(f"  ⟨<|im_start|>⟩|{start} ")
    assert "[your text]" in lines and "[generation prompt]" in lines
    assert lines[-1].startswith(f"{len(tokens.tokens)} tokens: instructions ")


def test_a_session_shows_its_last_prompts_tokens(tiny_engine, one_torch_thread, no_worker_left):
    session = seeded_session(tiny_engine, load_skills(), instructions=INSTRUCTIONS_TEXT, settings=SETTINGS)
    assert NO_TOKENS_YET in prompt_tokens_html(session)
    "".join(session.send(TYPED, TRANSLATE))
    shown = prompt_tokens_html(session)
    assert "your text · " in shown and "skill template · " in shown and "instructions · " in shown


def test_a_server_engine_says_it_tokenizes_the_prompt_itself():
    engine = RemoteEngine("http://127.0.0.1:9/v1", "some-model")  # never contacted
    session = seeded_session(engine, load_skills())
    messages = [{"role": "user", "content": "hello"}]
    session.last_prompt = FittedPrompt(Prompt("hello", [], estimated_length=2), messages, 0, False, 8)
    assert html.escape(SERVER_TOKENIZES) in prompt_tokens_html(session)


@pytest.mark.parametrize("text, offsets, expected", [
    ("Hi you", [(0, 2), (2, 6)], ["Hi", " you"]),
    ("Hi", [(0, 0), (0, 2)], ["", "Hi"]),  # a BOS the tokenizer adds covers no text
    ("a😀", [(0, 1), (1, 2), (1, 2)], ["a", "", "😀"]),  # an emoji's bytes split over two tokens: it goes to the last
    ("Hi you", [(0, 2), (3, 6)], ["Hi", " you"]),  # offsets that leave the space out: it goes to the next token
    ("Hi\n", [(0, 2)], ["Hi\n"]),  # characters after the last offset go to the last token
])
def test_offsets_cut_the_text_into_one_piece_per_token(text, offsets, expected):
    assert texts_from_offsets(text, offsets) == expected
