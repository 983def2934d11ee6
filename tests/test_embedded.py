"""End-to-end with the embedded SmolLM2-135M-Instruct: found, converted once, and it answers."""

from __future__ import annotations

import importlib.metadata

import pytest

from chat.local.embedded import EMBEDDED_DISTRIBUTION, EMBEDDED_NAME, converted_dir, ensure_converted, find_embedded_gguf
from tests.helpers.engines import make_engine
from tests.helpers.settings import greedy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_engine():
    # No --model: the real default path. Converts into the real user cache once (~35 s), then reuses it.
    return make_engine(None)


def ask(engine, question: str, max_new_tokens: int):
    settings = greedy(max_new_tokens)
    generation = engine.generate(engine.prepare([{"role": "user", "content": question}], settings), settings)
    deltas = list(generation)
    return generation, deltas


def test_the_gguf_is_found_through_package_metadata():
    path = find_embedded_gguf()
    assert path.is_file() and path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    files = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION).files
    assert any(str(file).endswith(path.name) for file in files)


def test_conversion_happens_once():
    said = []
    folder = ensure_converted(find_embedded_gguf(), say=said.append)  # converts on a fresh machine
    assert folder == converted_dir(find_embedded_gguf())
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    said.clear()
    assert ensure_converted(find_embedded_gguf(), say=said.append) == folder
    assert said == []  # the second start reuses the folder silently


def test_loads_by_default_with_its_chat_template(embedded_engine):
    assert embedded_engine.name == EMBEDDED_NAME
    assert embedded_engine.format.name == "chat-template"
    assert embedded_engine.device.startswith("CPU")


def test_answers_a_simple_question(embedded_engine):
    generation, deltas = ask(embedded_engine, "What is the capital of France?", 16)
    assert "Paris" in generation.text
    assert "".join(deltas) == generation.text
    assert generation.stats.stop_reason == "eos"


def test_emoji_stream_as_whole_characters(embedded_engine):
    generation, deltas = ask(embedded_engine, "Send me a happy emoji 😀", 12)
    assert any(ord(char) > 0xFFFF for char in generation.text)  # an emoji: several tokens per character
    assert not any("\ufffd" in delta for delta in deltas), deltas
    for limit in (1, 2):  # cut off inside the first emoji
        cut, deltas = ask(embedded_engine, "Send me a happy emoji 😀", limit)
        assert not any("\ufffd" in delta for delta in deltas), (limit, deltas)
        assert generation.text.startswith(cut.text)
