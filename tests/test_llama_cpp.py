"""The app on `--backend openai` against a real llama.cpp server (llama-cpp-python) serving the
embedded SmolLM2, started with the README's recipe: what a llama.cpp user meets, end to end.

scripts/test builds llama-cpp-python first (scripts/install-llama-cpp); run alone, these tests skip
where it is not installed. A failing test's report holds the server's exit status and log.
"""

from __future__ import annotations

import threading

import pytest

from chat.errors import GenerationError
from chat.remote.engine import RemoteEngine
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills_file import load_skills
from chat.answer_tokens import SERVER, TOP
from chat.web.view import chat_messages
from tests.helpers.llama_server import ALIAS, LlamaServer, require_llama_cpp
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

pytestmark = pytest.mark.llama_cpp

N_CTX = 512  # small, so that a chat outgrows it in a few turns
GREEDY = greedy(24, seed=1)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory, request):
    require_llama_cpp()
    log_dir = request.config.rootpath / "test-artifacts"
    with LlamaServer(log_dir, n_ctx=N_CTX) as server:
        yield server


def connected(server: LlamaServer, context_window: int | None = N_CTX, **options) -> tuple[RemoteEngine, list[str]]:
    said: list[str] = []
    engine = RemoteEngine(server.base_url, ALIAS, context_window=context_window, **options)
    engine.connect(said.append)
    return engine, said


def session_on(engine: RemoteEngine, settings: GenerationSettings = GREEDY) -> ChatSession:
    return seeded_session(engine, load_skills(), "Be brief.", settings)


def test_a_chat_streams_stops_and_goes_on(llama_server):
    engine, said = connected(llama_server)
    assert engine.server.kind == "llama-cpp-python" and engine.context_window == N_CTX
    assert said == [f"Model server (llama-cpp-python): {llama_server.base_url}, model 'smollm2', context window 512 tokens "
                    "(--context-window)"]
    session = session_on(engine)
    reply = session.send("What is the capital of France?")
    assert "".join(reply).strip()
    assert 0 < reply.stats.new_tokens <= GREEDY.max_new_tokens
    # This server sends no usage: the counts are estimates, and say so.
    assert reply.stats.estimated and "prompt ~" in reply.stats.summary() and "(estimates)" in reply.stats.summary()
    deltas = iter(session.send("Tell me a long story."))
    next(deltas)
    session.stop()
    assert "".join(session.send("Hello"))  # the server still serves after a Stop


def test_without_the_window_flag_the_servers_default_is_assumed_and_start_up_says_so(llama_server):
    engine, said = connected(llama_server, context_window=None)
    assert engine.context_window == 2048 and "assumed" in said[0] and "--n_ctx" in said[0]


def test_a_chat_longer_than_the_servers_context_is_trimmed_and_keeps_its_beginning_between_trims(llama_server):
    engine, _ = connected(llama_server)
    session = session_on(engine)
    dropped = []
    for turn in range(14):
        reply = session.send(f"Turn {turn}: tell me one fact about the number {turn * 7}, in a sentence or two.")
        assert "".join(reply).strip(), f"turn {turn} got an empty answer"
        dropped.append(reply.fitted.dropped_messages)
    trims = [i for i in range(1, len(dropped)) if dropped[i] != dropped[i - 1]]
    assert dropped[-1] > 0 and trims, dropped  # it outgrew the window and was trimmed ...
    assert len(trims) <= len(dropped) // 3, dropped  # ... a few times, not at every turn
    notices = [m for m in chat_messages(session) if "no longer sees the messages above" in m["content"]]
    assert len(notices) == 1


def test_a_window_larger_than_the_servers_gives_an_error_that_says_what_to_do_not_a_blank_answer(llama_server):
    engine, _ = connected(llama_server, context_window=32_768)  # the app believes the server's window is larger
    session = session_on(engine)
    with pytest.raises(GenerationError) as caught:
        for turn in range(30):
            "".join(session.send(f"Turn {turn}: " + "please remember this sentence well. " * 12))
    message = str(caught.value)
    assert "empty answer" in message and "--context-window" in message and "--n_ctx" in message
    assert session.history[-1]["error"] == message and session.history[-2]["role"] == "user"  # the message is kept
    assert message in chat_messages(session)[-1]["content"]


def test_two_users_at_once_both_get_their_whole_answers(llama_server):
    """The recipe's --interrupt_requests False: a second request waits instead of cutting the first off."""
    engine, _ = connected(llama_server)
    questions = ["Name three colours.", "Name three animals."]
    alone = ["".join(session_on(engine).send(question)) for question in questions]
    together: dict[int, str] = {}

    def ask(index: int) -> None:
        together[index] = "".join(session_on(engine).send(questions[index]))

    threads = [threading.Thread(target=ask, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [together.get(0), together.get(1)] == alone


def test_the_servers_token_probabilities_make_up_the_answer(llama_server):
    """llama-cpp-python returns the model's own logprobs (with each token's text alone, as it then streams it)."""
    engine, _ = connected(llama_server)
    fitted = engine.prepare([{"role": "user", "content": "What is the capital of France?"}], GREEDY)
    generation = engine.generate(fitted, GREEDY, tokens=True)
    text = "".join(generation)
    log = generation.tokens
    assert text.strip() and log.note is None and log.distributions == (SERVER,)
    assert log.text == text and len(log) >= len(text.split())
    for step in log.steps:
        dist = step.dists[SERVER]
        assert step.id is None and dist.logprob <= 0 and 0 < len(dist.top) <= TOP
        assert [a.logprob for a in dist.top] == sorted((a.logprob for a in dist.top), reverse=True)
    assert max(len(step.dists[SERVER].top) for step in log.steps) == TOP  # it was asked for 20


def test_the_repetition_penalty_reaches_llama_cpp_as_repeat_penalty(llama_server):
    engine, _ = connected(llama_server)
    question = "List the numbers from 1 to 20."  # "1, 2, 3, ...": a penalty on repeats changes it at once
    plain = "".join(session_on(engine, GREEDY).send(question))
    penalised = "".join(session_on(engine, GREEDY.replace(repetition_penalty=1.8)).send(question))
    assert penalised != plain  # the server applied it
    standard, _ = connected(llama_server, standard_sampling=True)  # --standard-sampling: not sent
    assert "".join(session_on(standard, GREEDY.replace(repetition_penalty=1.8)).send(question)) == plain


def test_a_server_that_cuts_answers_off_says_so_instead_of_a_short_answer_marked_eos(tmp_path):
    """llama-cpp-python's default --interrupt_requests True ends an answer when another request comes."""
    require_llama_cpp()
    with LlamaServer(tmp_path, n_ctx=N_CTX, interrupt_requests=True) as server:
        engine, _ = connected(server)
        long_answer = GREEDY.replace(max_new_tokens=400)
        first = session_on(engine, long_answer)
        deltas = iter(first.send("Count from 1 to 300, separated by commas."))
        next(deltas)
        second = session_on(engine, GREEDY)
        assert "".join(second.send("Hi")).strip()  # the newcomer is served ...
        with pytest.raises(GenerationError, match="--interrupt_requests False"):
            "".join(deltas)  # ... and the first answer, cut off, says why
        assert first.history[-1]["error"] and first.history[-1]["content"]  # what came is kept, marked failed
