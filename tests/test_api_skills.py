"""A user's own skills through /v1 (the official `openai` client and LangChain's `ChatOpenAI`): a request with an
--auth account names its user's skills as `<model>:<command>`, another user's are unknown to it, and a request
with only the API key gets the skills file's."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI

from chat.skill_library import SkillLibrary
from chat.skills import Skill
from chat.store.store import Store
from tests.helpers.api_servers import TEST_SKILLS, serve_api
from tests.helpers.settings import greedy

GREEDY = greedy(8)
ACCOUNTS = [("ada", "ada-pw"), ("bob", "bob-pw")]
HAIKU = Skill("🧪 Haiku", "Write a haiku about this: {message}")


@pytest.fixture
def server(tiny_engine, tmp_path):
    library = SkillLibrary(TEST_SKILLS, Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}").skills)
    library.save("user:ada", HAIKU)
    with serve_api(tiny_engine, skills=library, defaults=GREEDY, api_key="the-key", auth=ACCOUNTS) as running:
        yield running


def client(server, credential: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=credential, max_retries=0, timeout=60)


def listed(server, credential: str) -> set[str]:
    return {model.id for model in client(server, credential).models.list()}


def test_each_user_sees_their_own_skills_and_the_key_the_files(server, tiny_engine):
    haiku = f"{tiny_engine.name}:haiku"
    assert haiku in listed(server, "ada:ada-pw")
    assert haiku not in listed(server, "bob:bob-pw") and haiku not in listed(server, "the-key")
    assert f"{tiny_engine.name}:say-twice" in listed(server, "bob:bob-pw") & listed(server, "the-key")


def test_a_users_skill_wraps_their_message_and_is_unknown_to_another(server, tiny_engine):
    ask = lambda credential, model, text: client(server, credential).chat.completions.create(  # noqa: E731
        model=model, messages=[{"role": "user", "content": text}]).choices[0].message.content
    wrapped = ask("ada:ada-pw", f"{tiny_engine.name}:haiku", "the sea")
    assert wrapped == ask("the-key", tiny_engine.name, "Write a haiku about this: the sea")  # greedy: the same prompt
    langchain = ChatOpenAI(base_url=server.url + "/v1", api_key="ada:ada-pw", model=f"{tiny_engine.name}:haiku",
                           max_retries=0, temperature=0)
    assert langchain.invoke("the sea").content == wrapped
    with pytest.raises(openai.NotFoundError, match="has no skill .haiku.; skills: chat, say-twice, short") as refused:
        ask("bob:bob-pw", f"{tiny_engine.name}:haiku", "the sea")
    assert refused.value.code == "model_not_found"
