"""Shared fixtures: tiny real models, engines and sessions; user folders kept in tmp."""

from __future__ import annotations

import pytest

from tests.tiny_models import save_tiny_model


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """No test touches the real user cache or the hub (as `llm` does with its user dir)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_template=True)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat_template=False)


def make_engine(folder, prompt_format="auto", batching=False, **load_options):
    from chat.local.engine import LocalEngine
    from chat.formats import choose_format
    from chat.local.loader import LoadOptions, load_model

    loaded = load_model(LoadOptions(model=str(folder), **load_options), say=lambda _: None)
    return LocalEngine(loaded, choose_format(loaded.tokenizer, prompt_format), batching=batching)


@pytest.fixture(scope="session")
def tiny_engine(tiny_chat_dir):
    return make_engine(tiny_chat_dir)


@pytest.fixture(scope="session")
def tiny_base_engine(tiny_base_dir):
    return make_engine(tiny_base_dir)


@pytest.fixture
def chatty_engine(tiny_chat_dir):
    """A tiny engine that never meets an end-of-sequence token: answers run to max tokens."""
    engine = make_engine(tiny_chat_dir)
    engine.eos_ids = frozenset({10**6})
    return engine


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run ~10x faster on one thread than on two busy cores fighting over spin-waits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
