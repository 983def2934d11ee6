"""Shared fixtures: tiny real models and engines, user folders kept in tmp, one torch thread, a
browser, and the check that no generation worker outlives a test. Helpers live in tests/helpers/."""

from __future__ import annotations

import pytest

from tests.helpers.browser import chromium
from tests.helpers.engines import make_engine
from tests.helpers.llama_server import LlamaServer
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for
from tests.helpers.workers import END_WITHIN_S, generation_workers


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """No test touches the real user cache or the hub (as `llm` does with its user dir)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    # The default conversation database, and the adapters trained here that the model list shows: each test its own.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_template=True)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat_template=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_chat_dir):
    return make_engine(tiny_chat_dir)


@pytest.fixture(scope="session")
def tiny_base_engine(tiny_base_dir):
    return make_engine(tiny_base_dir)


@pytest.fixture
def chatty_engine(tiny_chat_dir):
    """A tiny engine that never meets an end-of-sequence token: answers run to max tokens."""
    return make_engine(tiny_chat_dir, endless=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run ~10x faster on one thread than on two busy cores fighting over spin-waits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_worker_left(request):
    """After the test, no generation worker ("generate", "remote-generate") is still running.

    Workers still finishing get up to the test module's `WORKERS_END_WITHIN_S` seconds to end
    (`END_WITHIN_S`, 1 s, where the module sets none); any still running then fail the test."""
    yield
    within = getattr(request.module, "WORKERS_END_WITHIN_S", END_WITHIN_S)
    assert wait_for(lambda: not generation_workers(), within), f"workers left running {within} s after the test: {generation_workers()}"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the test module."""
    with chromium() as browser:
        yield browser


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used a llama.cpp server reports the server's exit status and log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, LlamaServer):
                report.sections.append(("llama.cpp server", value.report()))
