"""The /v1 API over the model list, with the official `openai` client and LangChain's `ChatOpenAI`: `/v1/models`
lists every model with its context and whether it is loaded; `model` picks one (loading it first, with the
memory check), `<model>:<skill>` adds a skill to any of them, and an unknown model is OpenAI's 404."""

from __future__ import annotations

import openai
import pytest

from chat.library.entries import LocalFlags, local_entries
from chat.local.discovery import path_model
from chat.shelf import ModelShelf
from tests.helpers.api_servers import serve_api
from tests.helpers.settings import greedy

GREEDY = greedy(12)


def shelf_of(*folders, **limits) -> ModelShelf:
    flags = LocalFlags(batching=True, answers=2)
    return ModelShelf(lambda: [e for f in folders for e in local_entries(path_model(f, "--model"), flags, gpu=False)],
                      say=lambda _: None, **limits)


@pytest.fixture
def models(tiny_chat_dir, tiny_base_dir):
    models = shelf_of(tiny_chat_dir, tiny_base_dir)
    models.engine(models.default)  # the app loads its default model at start
    return models


@pytest.fixture
def client(models):
    with serve_api(None, models=models, defaults=GREEDY) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, model: str, text: str = "Hello", **fields):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **fields)


def test_models_lists_every_model_with_its_context_and_whether_it_is_loaded(client, models):
    listed = {model.id: model for model in client.models.list()}
    for info in models.listing():
        assert listed[info.name].model_extra["max_model_len"] == info.context_window == 512
        assert listed[info.name].model_extra["loaded"] is (info.name == models.default)
    assert f"{models.default}:say-twice" in listed  # the default model's skills, as before


def test_the_model_field_picks_the_model_loading_it_first(client, models, tiny_base_dir):
    other = f"{tiny_base_dir.name} · int4"
    answer = ask(client, other)
    assert answer.model == other and answer.choices[0].message.content
    assert models.info(other).loaded
    assert {m.id: m.model_extra["loaded"] for m in client.models.list()}[other] is True


def test_a_base_name_means_its_default_variant_and_skills_combine_with_any_model(client, models, tiny_base_dir):
    ask(client, tiny_base_dir.name)
    assert models.info(f"{tiny_base_dir.name} · int8").loaded
    short = ask(client, f"{tiny_base_dir.name} · int4:short")  # the skill's own max_new_tokens: 3
    assert short.usage.completion_tokens <= 3 < GREEDY.max_new_tokens
    assert models.info(f"{tiny_base_dir.name} · int4").loaded


def test_an_unknown_model_is_a_404_in_openais_shape_naming_the_models(client, models):
    with pytest.raises(openai.NotFoundError) as missing:
        ask(client, "gpt-17")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert models.default in missing.value.message
    with pytest.raises(openai.NotFoundError, match="has no skill 'nonsense'"):
        ask(client, f"{models.default}:nonsense")


def test_a_model_that_wont_fit_is_refused_and_the_loaded_one_keeps_answering(tiny_chat_dir):
    probe = shelf_of(tiny_chat_dir)
    small, big = (probe.info(f"{tiny_chat_dir.name} · {w}").estimate.total for w in ("int8", "float32"))
    models = shelf_of(tiny_chat_dir, memory_budget=(small + big) // 2)
    models.engine(models.default)
    with serve_api(None, models=models, defaults=GREEDY) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.InternalServerError) as refused:
            ask(client, f"{tiny_chat_dir.name} · float32")
        assert refused.value.status_code == 503 and "won't fit" in refused.value.message
        assert ask(client, models.default).choices[0].message.content


def test_langchain_picks_the_model_by_name(client, models, tiny_base_dir):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=f"{tiny_base_dir.name} · int8", base_url=str(client.base_url), api_key="unused", max_retries=0,
                      temperature=0, max_tokens=6)
    reply = chat.invoke("Hello")
    assert reply.response_metadata["model_name"] == f"{tiny_base_dir.name} · int8" and reply.content


def test_a_model_unloaded_while_a_request_starts_is_loaded_again_for_it(client, models):
    first = models.loaded_engine(models.default)
    prepare = first.prepare

    def prepared_then_unloaded(*args, **kwargs):
        fitted = prepare(*args, **kwargs)
        models.unload(models.default)  # (the page's Unload, at the worst moment)
        return fitted

    first.prepare = prepared_then_unloaded
    assert ask(client, models.default).choices[0].message.content
    assert first.model is None and models.loaded_engine(models.default) not in (None, first)
