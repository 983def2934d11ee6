"""The model list: every model with its estimate, loaded on demand and once, unloaded to make room (never one
answering) or on request, freeing its memory; a chat's model switched mid-chat, and each model's defaults."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chat.errors import ChatError, ModelLoadError
from chat.library.entries import LocalFlags, local_entries
from chat.local.discovery import folder_models, path_model
from chat.machine import give_back_freed_memory, process_rss
from chat.models import ModelDefaults
from chat.session import ChatSession
from chat.shelf import ModelShelf
from chat.skills import Skill, SkillBook
from chat.store.record import ChatRecord, settings_of, tree_of
from chat.store.store import Store
from chat.web.tabs import Tab
from chat.web.view import MODEL_MARK, chat_messages, provenance_view
from tests.helpers.engines import NO_EOS, paced
from tests.helpers.settings import greedy
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for

SETTINGS = greedy(6)


def shelf_of(*folders: Path, said: list[str] | None = None, **limits) -> ModelShelf:
    """The model list of these folders, each in every CPU weight format, as `--model` lists them."""
    flags = LocalFlags(batching=True, answers=1)

    def discover():
        return [entry for folder in folders for entry in local_entries(path_model(folder, "--model"), flags, gpu=False)]

    return ModelShelf(discover, say=(said.append if said is not None else lambda _: None), **limits)


@pytest.fixture
def two(tiny_chat_dir, tiny_base_dir) -> ModelShelf:
    return shelf_of(tiny_chat_dir, tiny_base_dir)


def session_on(models: ModelShelf) -> ChatSession:
    return ChatSession(models.engine(models.default), SkillBook([Skill("Chat", "{message}")]), "", SETTINGS, models=models)


def test_every_model_is_listed_in_each_weight_format_with_its_estimate_and_none_loads_until_asked(two, tiny_chat_dir):
    from transformers import AutoModelForCausalLM

    listed = {info.name: info for info in two.listing()}
    chat = tiny_chat_dir.name
    assert [name for name in listed if name.startswith(chat)] == [f"{chat} · int8", f"{chat} · int4", f"{chat} · float32"]
    assert not any(info.loaded for info in listed.values())
    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_chat_dir).parameters())
    assert listed[f"{chat} · float32"].parameters == real  # read from the files' headers, not guessed
    sizes = {weights: listed[f"{chat} · {weights}"].estimate.weights for weights in ("float32", "int8", "int4")}
    assert sizes["float32"] > sizes["int8"] > sizes["int4"]
    assert listed[f"{chat} · float32"].estimate.weights == real * 4


def test_the_estimate_matches_the_loaded_weights(two, tiny_chat_dir):
    """The estimate's weights against the bytes the loaded model's tensors take (RSS is measured in bench.models)."""
    from chat.local.memory import model_bytes

    for weights in ("float32", "int8", "int4"):
        name = f"{tiny_chat_dir.name} · {weights}"
        engine = two.engine(name)
        assert model_bytes(engine.model) == pytest.approx(two.info(name).estimate.weights, rel=0.05), weights


def test_a_model_loads_on_first_use_once_however_many_tabs_ask_at_once(tiny_chat_dir):
    said: list[str] = []
    models = shelf_of(tiny_chat_dir, said=said)
    got, start = [], threading.Barrier(4)

    def ask():
        start.wait()
        got.append(models.engine(models.default))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(engine is got[0] for engine in got)
    assert sum(line.startswith("Loading") for line in said) == 1
    assert models.info(models.default).loaded and models.info(models.default).in_use > 0


def test_the_base_name_means_the_default_variant(two, tiny_chat_dir):
    assert two.find(tiny_chat_dir.name) == f"{tiny_chat_dir.name} · int8"
    assert two.find("no such model") is None
    with pytest.raises(ModelLoadError, match="no model called 'no such model'; the list has: .*int8"):
        two.engine("no such model")


def test_under_max_loaded_the_least_recently_used_goes_never_one_answering(tiny_chat_dir, tiny_base_dir):
    models = shelf_of(tiny_chat_dir, tiny_base_dir, max_loaded=1)
    chat, base = f"{tiny_chat_dir.name} · int8", f"{tiny_base_dir.name} · int8"
    engine = paced(models.engine(chat), 0.05)
    engine.eos_ids = NO_EOS
    answer = engine.generate(engine.prepare([{"role": "user", "content": "Hi"}], greedy(400)), greedy(400))
    assert wait_for(lambda: engine.answering, 10)
    with pytest.raises(ModelLoadError, match="answering"):
        models.engine(base)
    assert models.info(chat).loaded and not models.info(base).loaded  # nothing changed
    answer.cancel()
    answer.close()
    assert wait_for(lambda: not engine.answering, 10)
    models.engine(base)
    assert models.info(base).loaded and not models.info(chat).loaded


def test_a_model_over_the_memory_budget_is_refused_with_what_to_do_and_nothing_else_changes(tiny_chat_dir):
    probe = shelf_of(tiny_chat_dir)
    small, big = (probe.info(f"{tiny_chat_dir.name} · {w}").estimate.total for w in ("int4", "float32"))
    models = shelf_of(tiny_chat_dir, memory_budget=(small + big) // 2)
    models.engine(f"{tiny_chat_dir.name} · int4")
    with pytest.raises(ModelLoadError) as refused:
        models.engine(f"{tiny_chat_dir.name} · float32")
    message = str(refused.value)
    assert "won't fit" in message and "--memory-budget" in message and "KV cache" in message
    assert [info.name for info in models.listing() if info.loaded] == [f"{tiny_chat_dir.name} · int4"]


def test_unload_is_refused_while_the_model_answers(two):
    engine = paced(two.engine(two.default), 0.05)
    engine.eos_ids = NO_EOS
    answer = engine.generate(engine.prepare([{"role": "user", "content": "Hi"}], greedy(400)), greedy(400))
    assert wait_for(lambda: engine.answering, 10)
    with pytest.raises(ChatError, match="answering now"):
        two.unload(two.default)
    answer.cancel()
    answer.close()
    assert wait_for(lambda: not engine.answering, 10)
    two.unload(two.default)
    assert not two.info(two.default).loaded


def test_unload_frees_the_models_memory(tmp_path):
    """A model of ~200 MB in float32: what loading and answering added to the process's resident memory goes
    when it is unloaded. (Its weights are mapped from the file, and count once an answer has read them.)"""
    folder = save_tiny_model(tmp_path / "bigger", hidden=512, layers=8, vocab=32_000)
    models = shelf_of(folder)
    name = f"{folder.name} · float32"
    give_back_freed_memory()
    before = process_rss()
    engine = models.engine(name)
    "".join(engine.generate(engine.prepare([{"role": "user", "content": "Hi"}], SETTINGS), SETTINGS))  # (no cache: no warm-up after)
    give_back_freed_memory()
    loaded = process_rss()
    models.unload(name)
    freed = loaded - process_rss()
    assert loaded - before > 100e6 and freed > 0.8 * (loaded - before), \
        f"loading and answering took {(loaded - before) / 1e6:.0f} MB; unloading freed {freed / 1e6:.0f} MB"
    assert engine.model is None  # a session holding the engine holds no weights


def test_a_chat_whose_model_was_unloaded_gets_it_back_at_its_next_message(two):
    session = session_on(two)
    "".join(session.send("Hi"))
    two.unload(session.model)
    reply = session.send("And again?")
    "".join(reply)
    assert "error" not in session.history[-1] and session.history[-1]["content"]
    assert two.info(session.model).loaded and session.history[-1]["provenance"].model == session.model


def test_switching_model_mid_chat_carries_on_and_each_answer_names_its_model(two, tiny_base_dir):
    session = session_on(two)
    "".join(session.send("Hello"))
    other = f"{tiny_base_dir.name} · int4"
    session.use_model(tiny_base_dir.name + " · int4")
    "".join(session.send("Who are you?"))
    made = [m["provenance"].model for m in session.history if m["role"] == "assistant"]
    assert made == [two.default, other]
    assert session.history[-1]["provenance"].parts[0].messages_sent == len(session.history) - 1  # the whole chat went to it
    marks = [m["content"] for m in chat_messages(session) if m["role"] == "assistant"]
    assert f"{MODEL_MARK} {two.default}" in marks[0] and f"{MODEL_MARK} {other}" in marks[1]


def test_one_models_answers_carry_no_mark(two):
    session = session_on(two)
    "".join(session.send("Hello"))
    assert MODEL_MARK not in chat_messages(session)[-1]["content"]


def test_a_models_defaults_are_applied_when_it_is_picked_kept_in_the_store_and_shown(tmp_path, tiny_chat_dir, tiny_base_dir):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    models = shelf_of(tiny_chat_dir, tiny_base_dir)
    models.keeper = store
    other = f"{tiny_base_dir.name} · int8"
    models.save_defaults(other, ModelDefaults("You are a pirate.", {"temperature": 0.3}, ("###",), "transcript"))
    session = session_on(models)
    session.use_model(other)
    assert session.instructions == "You are a pirate." and session.settings.temperature == 0.3
    "".join(session.send("Ahoy"))
    assert session.engine.format.name == "transcript"
    assert "'###'" in " ".join(session.history[-1]["provenance"].model_defaults)
    assert "The model's defaults:" in provenance_view(Tab(session))
    again = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")  # another start of the app
    assert again.model_defaults(other) == ModelDefaults("You are a pirate.", {"temperature": 0.3}, ("###",), "transcript")


def test_the_chats_model_is_saved_with_it_and_comes_back(tmp_path, two, tiny_base_dir):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    session = session_on(two)
    session.start_record(ChatRecord.new(store, "user:ann", "", SETTINGS))
    other = f"{tiny_base_dir.name} · int4"
    session.use_model(other)
    "".join(session.send("Hi"))
    chat = store.open_chat("user:ann", session.record.chat_id)
    assert chat.model == other and store.chats("user:ann")[0].model == other
    later = session_on(two)  # a reload: a new session, the default model
    later.open(ChatRecord(store, "user:ann", chat.id), *tree_of(chat), chat.instructions, settings_of(chat, SETTINGS), chat.model)
    assert later.model == other
    "".join(later.send("And now?"))
    assert later.history[-1]["provenance"].model == other


def test_a_broken_folder_names_its_file_and_problem_and_the_others_keep_serving(tmp_path, tiny_chat_dir):
    import shutil

    shutil.copytree(tiny_chat_dir, tmp_path / "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": 64,,\n}')
    (broken / "model.safetensors").write_bytes(b"")
    (tmp_path / "half.gguf").write_bytes(b"GGUF not really")
    found = {model.base: model for model in folder_models(tmp_path)}
    assert f"{broken / 'config.json'}: line 2" in found["broken"].problem
    assert "half.gguf" in found["half"].problem and found["good"].problem is None
    flags = LocalFlags(batching=False, answers=1)
    models = ModelShelf(lambda: [e for m in found.values() for e in local_entries(m, flags, gpu=False)], say=lambda _: None)
    with pytest.raises(ModelLoadError, match="config.json: line 2"):
        models.engine("broken")
    engine = models.engine("good")
    assert "".join(engine.generate(engine.prepare([{"role": "user", "content": "Hi"}], SETTINGS), SETTINGS))


def test_loading_one_model_never_holds_up_another_models_answers(two, tiny_base_dir):
    """While one model loads (held here in its build, as a big model's would take minutes), the loaded one answers,
    and the list can be read."""
    from dataclasses import replace as changed

    slow = f"{tiny_base_dir.name} · float32"
    entry = two._entries[slow]
    building, release = threading.Event(), threading.Event()

    def held_build(say, progress, defaults):
        building.set()
        release.wait(30)
        return entry.build(say, progress, defaults)

    two._entries[slow] = changed(entry, build=held_build)
    engine = two.engine(two.default)
    loading = threading.Thread(target=two.engine, args=(slow,))
    loading.start()
    try:
        assert building.wait(10)
        assert two.loaded_engine(two.default) is engine and len(two.listing()) == 6
        assert "".join(engine.generate(engine.prepare([{"role": "user", "content": "Hi"}], SETTINGS), SETTINGS))
        assert not two.info(slow).loaded and two.info(two.default).loaded
    finally:
        release.set()
        loading.join(30)
    assert two.info(slow).loaded


def test_a_servers_models_join_the_list_beside_the_local_ones(tiny_chat_dir, tiny_base_dir):
    import app
    from chat.cli.args import build_models
    from tests.helpers.api_servers import serve_api
    from tests.helpers.engines import make_engine

    served = make_engine(tiny_base_dir)
    served.name = "served-tiny"
    with serve_api(served, defaults=SETTINGS) as server:
        both = build_models(app.parse_args(["--model", str(tiny_chat_dir), "--base-url", server.url + "/v1", "--db", "none"]),
                            say=lambda _: None)
        assert both.default == f"{tiny_chat_dir.name} · int8"
        assert "served-tiny" in both.names() and f"{tiny_chat_dir.name} · int4" in both.names()
        assert [info.source for info in both.listing() if info.name == "served-tiny"] == [f"server {server.url}/v1"]
        session = ChatSession(both.engine(both.default), SkillBook([Skill("Chat", "{message}")]), "", SETTINGS, models=both)
        session.use_model("served-tiny")
        "".join(session.send("Hello"))
        assert session.history[-1]["provenance"].backend == "RemoteEngine" and session.history[-1]["content"]

        remote_only = build_models(app.parse_args(["--backend", "openai", "--base-url", server.url + "/v1", "--db", "none"]),
                                   say=lambda _: None)
        assert remote_only.names() == ["served-tiny"] and remote_only.default == "served-tiny"


def test_the_pages_models_section_saves_a_models_defaults_and_picking_it_brings_them(two, tiny_base_dir):
    """Its instructions, settings, stop strings, prompt format and skill: picking the model brings each."""
    import gradio as gr

    from chat.settings import SETTINGS as DECLARED
    from chat.web.panels import models as section

    skills = SkillBook([Skill("Chat", "{message}"), Skill("💎 Summarize", "Summarize: {message}")])
    tab = Tab(ChatSession(two.engine(two.default), skills, "", SETTINGS, models=two))
    other = f"{tiny_base_dir.name} · int8"
    controls = [None] * len(DECLARED)
    section.save_defaults(tab, other, "###\n", "transcript", "💎 Summarize", "Talk like a pirate.", *controls)
    tab.session.instructions = "Be helpful."
    shown = section.choose_model(tab, other, gr.Progress())
    assert shown["model"] == other and shown["instructions"] == "Talk like a pirate." and shown["skill"]["value"] == "💎 Summarize"
    assert f"{other}</td><td>● loaded" in shown["table"]
    about = section.describe(tab, other)
    assert about["stops"] == "###" and about["prompt_format"] == "transcript" and "stop strings '###'" in about["about"]
    assert "skill 💎 Summarize" in about["about"]
    section.clear_defaults(tab, other)
    assert two.defaults(other).empty


def test_a_model_unloaded_after_the_chat_got_it_is_loaded_again_for_that_answer(two):
    """Unloaded between the chat getting its engine and the answer starting: the answer starts all the same."""
    session = session_on(two)
    "".join(session.send("Hi"))
    first = session.engine
    prepare = first.prepare

    def prepared_then_unloaded(*args, **kwargs):
        fitted = prepare(*args, **kwargs)
        two.unload(session.model)  # (another tab's Unload, at the worst moment)
        return fitted

    first.prepare = prepared_then_unloaded
    "".join(session.send("And again?"))
    assert "error" not in session.history[-1] and session.history[-1]["content"]
    assert first.model is None and two.loaded_engine(session.model) is session.engine is not first


def test_the_least_recently_used_is_the_one_a_chat_used_least_recently(tiny_chat_dir, tiny_base_dir):
    models = shelf_of(tiny_chat_dir, tiny_base_dir, max_loaded=2)
    a, b, c = f"{tiny_chat_dir.name} · int8", f"{tiny_base_dir.name} · int8", f"{tiny_chat_dir.name} · int4"
    chat = session_on(models)  # on a
    models.engine(b)
    "".join(chat.send("Hi"))  # a answers after b was loaded: b is the least recently used now
    models.engine(c)
    assert [info.name for info in models.listing() if info.loaded] == [a, c]


def test_a_models_defaults_hold_on_every_path_that_loads_it(tmp_path, tiny_chat_dir, capsys):
    """The terminal's renderer (as the page and the terminal chat, through the same list): the default model's
    stored prompt format and instructions are what its prompt is built with; --instructions still wins."""
    from chat.__main__ import main

    db = str(tmp_path / "chats.sqlite3")
    Store(f"sqlite:///{db}").save_model_defaults(f"{tiny_chat_dir.name} · int8",
                                                 ModelDefaults("Answer as a pirate.", {}, (), "transcript"))
    assert main(["render", "--model", str(tiny_chat_dir), "--db", db, "--message", "Ahoy"]) == 0
    prompt = capsys.readouterr().out
    assert prompt.startswith("Answer as a pirate.") and "User: Ahoy" in prompt and "<|im_start|>" not in prompt
    assert main(["render", "--model", str(tiny_chat_dir), "--db", db, "--message", "Ahoy", "--instructions", "Be plain."]) == 0
    assert capsys.readouterr().out.startswith("Be plain.")
