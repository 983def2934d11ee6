"""Compare side by side (chat/compare.py, chat/comparing.py): contenders, answers at once as siblings of one message,
the blind vote locked once cast, going on from a column, the models checked against memory as a set, the conversation
file and Markdown, the columns' word diff, and the leaderboard's votes by owner. Real tiny models and tokenizers."""

from __future__ import annotations

import json
import re

import pytest

from chat.attachments import Attachment
from chat.compare import Comparison, Contender, Outcome
from chat.errors import ChatError, ModelLoadError, SettingsError, SkillError
from chat.files import conversation_document, markdown, read_conversation
from chat.models import ModelDefaults, ModelList
from chat.session import ChatSession
from chat.skill_library import SkillLibrary
from chat.skills import Skill, SkillBook
from chat.skills_file import load_skills
from chat.store.record import ChatRecord, tree_of
from chat.store.rows import storable
from chat.store.store import Store, user_owner
from chat.web.compare_html import ShownColumn, columns_html, marked_words
from chat.web.panels.compare import votes_of
from chat.web.tabs import Tab
from tests.helpers.engines import make_engine
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.test_models import shelf_of

TOKENS = 16
WAIT_S = 60


def no_skill(name: str, version: int | None) -> Skill:
    raise SkillError(f"no skill {name}")


@pytest.fixture(scope="module")
def batched(tiny_chat_dir):
    """The tiny chat model as the app runs it: batching on, never ending before its token limit."""
    return make_engine(tiny_chat_dir, batching=True, endless=True)


@pytest.fixture
def session(batched):
    return seeded_session(batched, load_skills(), settings=greedy(TOKENS))


def compared(session: ChatSession, *specs: str, blind: bool = True, text: str = "Tell me about the sea.", tokens: bool = False):
    run = session.comparisons.compare(text, [Contender.parse(spec, no_skill) for spec in specs], blind=blind, tokens=tokens)
    assert run.wait(WAIT_S)
    return run


def temperature_of(session: ChatSession, answer_id: str) -> float:
    return session.tree.messages[answer_id]["provenance"].parts[0].settings["temperature"]


# -- contenders ---------------------------------------------------------------------------------


def test_a_contender_says_what_it_changes_and_a_blank_one_is_the_chat_as_it_is():
    contender = Contender.parse("temperature=1.2 top_k=5 instructions='Be terse.' model=other", no_skill)
    assert contender.changes() == ["model other", "instructions “Be terse.”", "temperature 1.2", "top k 5"]
    assert Contender.parse("  ", no_skill).describe() == "as the chat is"


def test_labels_tell_apart_long_instructions_that_begin_alike():
    from chat.compare import label
    skill, settings = Skill("Chat", "{message}"), greedy(4)
    french, german = (label("m", skill, f"You are a helpful assistant who always answers in {language}.", settings)
                      for language in ("French", "German"))
    assert french != german and re.match(r"m · Chat · instructions “You are a helpful assistant who always …” #\w{6} · ", french)


def test_a_skill_whose_name_ends_like_a_version_is_found_by_that_name():
    found = []

    def find(name: str, version: int | None) -> Skill:
        if name != "GPT v2" and version is None:
            raise SkillError("no such skill")
        found.append((name, version))
        return Skill(name, "{message}")

    Contender.parse("skill='GPT v2'", find)
    assert found == [("GPT v2", None)]


@pytest.mark.parametrize("spec, words", [("temperature", "write each change as key=value"),
                                         ("max_new_tokens=inf", "max_new_tokens must be a finite number"),
                                         ("temperature=nan", "temperature must be a finite number"),
                                         ("colour=blue", "'colour' is not something a contender can change"),
                                         ("temperature=9", "temperature must be between 0 and 5"),
                                         ("top_k=lots", "top_k must be a number"),
                                         ("instructions='unclosed", "put a value with spaces in quotes")])
def test_a_contender_that_cant_be_is_refused_naming_the_change(spec, words):
    with pytest.raises((ChatError, SettingsError), match=words):
        Contender.parse(spec, no_skill)


def test_a_skill_contender_names_its_version_either_way():
    asked = []

    def find(name: str, version: int | None) -> Skill:
        if name not in ("summarize", "💎 Summarize"):
            raise SkillError(f"no skill {name}")
        asked.append((name, version))
        return Skill(name, "{message}", version=version)

    Contender.parse("skill=summarize@2", find)
    Contender.parse("skill='💎 Summarize v3'", find)
    Contender.parse("skill=/summarize", find)
    assert asked == [("summarize", 2), ("💎 Summarize", 3), ("summarize", None)]


def test_a_users_skill_is_found_at_any_saved_version_and_the_files_have_none():
    library = SkillLibrary(load_skills())
    library.save("ada", Skill("Haiku", "Write a haiku: {message}"), "first")
    library.save("ada", Skill("Haiku", "Write three haiku: {message}"), "more", replacing="Haiku")
    assert library.find("ada", "haiku", 1).template.startswith("Write a haiku") and library.find("ada", "Haiku").version == 2
    with pytest.raises(SkillError, match="has no version 7 .it is at version 2."):
        library.find("ada", "Haiku", 7)
    with pytest.raises(SkillError, match="the skills file's: it has no versions"):
        library.find("ada", "summarize", 2)


# -- answers side by side ------------------------------------------------------------------------


def test_each_contender_answers_the_message_as_a_sibling_and_the_chat_waits_for_a_choice(session):
    run = compared(session, "", "temperature=1.2", tokens=True)
    question = session.history[-1]
    assert question["role"] == "user" and question["typed"] == "Tell me about the sea."  # nobody went on yet
    comparison = question["comparison"]
    answers = session.tree.siblings(comparison.columns[0].answer_id)
    assert sorted(answers) == sorted(column.answer_id for column in comparison.columns)
    assert session.tree.parent[answers[0]] == question["id"]
    made = {column.changes: temperature_of(session, column.answer_id) for column in comparison.columns}
    assert made == {"as the chat is": 0.0, "temperature 1.2": 1.2}
    for column in comparison.columns:
        answer = session.tree.messages[column.answer_id]
        assert answer["content"] and answer["provenance"].parts[0].figures.new_tokens == TOKENS
        assert session.token_logs.of(answer) is not None  # (recorded when asked: the column shows its mean log-probability)
        assert column.label.startswith(session.model) and "💬 Chat" in column.label
    assert not session.busy and run.done


def test_blind_columns_are_shuffled_and_open_ones_keep_their_order(batched):
    session = seeded_session(batched, load_skills(), settings=greedy(1))
    firsts = set()
    for _ in range(8):
        comparison = compared(session, "", "temperature=1.2").comparison
        firsts.add(comparison.columns[0].changes)
        session.comparisons.go_on_with(0)
    assert firsts == {"as the chat is", "temperature 1.2"}
    session.settings = greedy(1)  # (going on with a column took on its temperature)
    comparison = compared(session, "", "temperature=1.2", "top_k=3", blind=False).comparison
    assert [column.changes for column in comparison.columns] == ["as the chat is", "temperature 1.2", "top k 3"]
    assert not comparison.blind and comparison.revealed


def test_a_vote_is_locked_once_cast_and_refused_while_the_answers_come(batched):
    session = seeded_session(batched, load_skills(), settings=greedy(4000))
    run = session.comparisons.compare("Hi", [Contender(), Contender(settings={"temperature": 1.2})])
    with pytest.raises(ChatError, match="still coming"):
        session.comparisons.judge(Outcome.TIE)
    session.stop()
    assert run.done and all(reply.answer.get("interrupted") for reply in run.replies)
    comparison = session.comparisons.judge(Outcome.WIN, 1)
    assert comparison.verdict() == "B is better" and comparison.revealed
    with pytest.raises(ChatError, match="judged already .B is better.: a vote can't change"):
        session.comparisons.judge(Outcome.TIE)
    assert comparison.as_vote().winner == 1


def test_continue_with_b_goes_on_from_bs_branch_with_its_settings_and_keeps_a_as_a_version(session):
    comparison = compared(session, "", "temperature=1.2", blind=False).comparison
    a, b = (session.tree.messages[column.answer_id] for column in comparison.columns)
    column = session.comparisons.go_on_with(1)
    assert session.history[-1] is b and session.settings.temperature == 1.2 and column.changes == "temperature 1.2"
    assert comparison.verdict() == "B is better" and comparison.continued == 1  # Continue counts as a vote for it
    assert session.tree.version(a["id"]) == (1, 2)
    "".join(session.send("And then?"))
    prompt = session.last_prompt.prompt.text
    assert b["content"] in prompt and (a["content"] == b["content"] or a["content"] not in prompt)


def test_below_an_undecided_comparison_the_user_says_which_answer_the_chat_goes_on_from(session):
    comparison = compared(session, "", "temperature=1.2").comparison
    for refused in (lambda: session.send("And then?"), session.retry):  # (a retried answer would show beside the columns)
        with pytest.raises(ChatError, match="answered side by side: .*(Continue with A or B|continue with one)"):
            refused()
    assert len(session.history) == 1 and len(session.tree) == 3  # nothing changed
    session.comparisons.judge(Outcome.WIN, 1)  # voted, not continued: the next message goes on from the better one,
    settings = session.settings
    "".join(session.send("And then?"))
    assert session.history[1]["id"] == comparison.columns[1].answer_id and comparison.continued == 1
    assert session.settings == settings  # with the chat's own settings (the page shows them; Continue changes them)


def test_a_contender_that_cant_be_prepared_leaves_the_chat_as_it_was(session):
    with pytest.raises(ChatError, match="instructions"):
        session.comparisons.compare("Hi", [Contender(), Contender(instructions="Be very careful. " * 400)])
    assert session.history == [] and len(session.tree) == 0 and not session.busy


def test_going_on_with_another_models_column_gives_the_chat_that_model_and_its_defaults(tiny_chat_dir):
    models = shelf_of(tiny_chat_dir, max_loaded=2)
    session = ChatSession(models.engine(models.default), load_skills(), "", greedy(4), models=models)
    other = next(name for name in models.names() if name != session.model)
    models.save_defaults(other, ModelDefaults(instructions="Be terse.", settings={"top_k": 7}))
    comparison = compared(session, "", f"model='{other}' temperature=0.5", blind=False).comparison
    assert session.tree.messages[comparison.columns[1].answer_id]["provenance"].instructions == "Be terse."
    session.comparisons.go_on_with(1)
    assert (session.model, session.instructions, session.settings.top_k, session.settings.temperature) == (other, "Be terse.", 7, 0.5)


def test_an_attached_file_is_every_contenders_material_and_one_too_big_is_refused(session):
    notes = Attachment("notes.md", "The lighthouse keeper counts ships.")
    run = session.comparisons.compare("/summarize", [Contender(), Contender(settings={"temperature": 1.2})], attachment=notes)
    assert run.wait(WAIT_S)
    question = session.history[-1]
    assert question["attached"] == "notes.md" and question["skill"] == "💎 Summarize"
    for reply in run.replies:
        assert "The lighthouse keeper counts ships." in reply.made.prompt and reply.made.prompt.count("notes.md") == 1
    session.comparisons.go_on_with(0)
    big = Attachment("big.txt", "word " * 3000)
    with pytest.raises(ChatError, match="big.txt does not fit: with it the prompt would be [\\d,]+ tokens"):
        session.comparisons.compare("Summarize this", [Contender(), Contender(settings={"top_k": 3})], attachment=big)
    assert len(session.history) == 2  # nothing taken


def test_two_to_four_contenders(session):
    for count in (1, 5):
        with pytest.raises(ChatError, match=f"compare 2 to 4 contenders, not {count}"):
            session.comparisons.compare("Hi", [Contender()] * count)
    assert session.history == []


# -- models together -----------------------------------------------------------------------------


def test_models_that_wont_fit_together_are_refused_before_anything_runs(tiny_chat_dir):
    probe = shelf_of(tiny_chat_dir)
    small, big = (probe.info(f"{tiny_chat_dir.name} · {w}").estimate.total for w in ("int4", "float32"))
    models = shelf_of(tiny_chat_dir, memory_budget=small + big - 1)  # each fits, both don't
    session = ChatSession(models.engine(f"{tiny_chat_dir.name} · int4"), load_skills(), "", greedy(4), models=models)
    with pytest.raises(ModelLoadError) as refused:
        session.comparisons.compare("Hi", [Contender(), Contender(model=f"{tiny_chat_dir.name} · float32")])
    message = str(refused.value)
    assert "won't fit in memory together" in message and "--memory-budget" in message and "Nothing ran" in message
    assert session.history == [] and [info.name for info in models.listing() if info.loaded] == [f"{tiny_chat_dir.name} · int4"]


def test_two_models_answer_side_by_side_when_they_fit(tiny_chat_dir):
    models: ModelList = shelf_of(tiny_chat_dir, max_loaded=2)
    session = ChatSession(models.engine(models.default), load_skills(), "", greedy(4), models=models)
    other = next(name for name in models.names() if name != session.model)
    comparison = compared(session, "", f"model='{other}'", blind=False).comparison
    assert [column.label.split(" · ")[:2] for column in comparison.columns] == [session.model.split(" · "), other.split(" · ")]
    assert [session.tree.messages[c.answer_id]["provenance"].model for c in comparison.columns] == [session.model, other]
    session.comparisons.go_on_with(0)
    with pytest.raises(ModelLoadError, match="--max-loaded is 2"):
        session.comparisons.compare("Hi", [Contender(model=name) for name in models.names()[:3]])


# -- kept: the store, the files -------------------------------------------------------------------


def test_the_comparison_and_its_vote_come_back_from_the_store(session, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    session.start_record(ChatRecord.new(store, "ada", "", session.settings))
    compared(session, "", "temperature=1.2")
    session.comparisons.judge(Outcome.WIN, 0)
    stored = store.open_chat("ada", session.record.chat_id)
    tree, shown = tree_of(stored)
    assert shown[-1]["typed"] == "Tell me about the sea." and shown[-1]["comparison"].verdict() == "A is better"
    again = shown[-1]["comparison"]
    assert [tree.messages[c.answer_id]["content"] for c in again.columns] == \
           [storable(session.tree.messages[c.answer_id]["content"]) for c in session.history[-1]["comparison"].columns]
    session.comparisons.go_on_with(1)
    assert tree_of(store.open_chat("ada", session.record.chat_id))[1][-1]["id"] == again.columns[1].answer_id


def test_the_conversation_file_and_markdown_hold_the_comparison_and_the_vote(session):
    compared(session, "", "temperature=1.2")
    session.comparisons.judge(Outcome.TIE)
    document = json.loads(json.dumps(conversation_document(session)))
    _, tree, shown = read_conversation(document, "chat.json")
    comparison = shown[-1]["comparison"]
    assert comparison.verdict() == "tie" and all(c.answer_id in tree.messages for c in comparison.columns)
    assert comparison.as_vote() is None  # shown, not counted again: it was counted where it was cast
    assert {tree.messages[c.answer_id]["content"] for c in comparison.columns} == \
           {session.tree.messages[c.answer_id]["content"] for c in session.history[-1]["comparison"].columns}
    written = markdown(session, session.model, "💬 Chat")
    assert "### Compared side by side (blind)" in written and "**Vote:** tie" in written
    assert "temperature 1.2" in written  # (the names show once the vote is in)


def test_markdown_of_a_blind_comparison_before_the_vote_names_no_column(session):
    compared(session, "", "temperature=1.2")
    written = markdown(session, session.model, "💬 Chat")
    assert written.count("name hidden until the vote") == 2 and "temperature 1.2" not in written and "seed" not in written


# -- what the page shows ------------------------------------------------------------------------


def test_the_diff_marks_the_words_that_differ_and_nothing_else():
    assert marked_words("the cat sat <here>", "the dog sat <here>") == 'the <mark class="differs">cat</mark> sat &lt;here&gt;'
    assert "<mark" not in marked_words("same words", "same words")


def test_blind_columns_hide_their_names_until_the_vote(session):
    comparison = compared(session, "", "temperature=1.2").comparison
    shown = [ShownColumn(session.tree.messages[c.answer_id], False, None) for c in comparison.columns]
    before = columns_html(comparison, shown)
    assert "name hidden" in before and "temperature 1.2" not in before
    session.comparisons.judge(Outcome.BOTH_BAD)
    after = columns_html(comparison, shown)
    assert "name hidden" not in after and "temperature 1.2" in after and "vote: <b>both bad</b> (locked)" in after


def test_the_leaderboard_counts_the_owners_votes_and_an_admins_counts_everyones(batched, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    tabs = {}
    for owner, winner in (("ada", 0), ("bob", 1)):
        session = seeded_session(batched, SkillBook([Skill("Chat", "{message}")]), settings=greedy(2))
        session.start_record(ChatRecord.new(store, user_owner(owner), "", session.settings))
        compared(session, "", "temperature=1.2", blind=False)
        session.comparisons.judge(Outcome.WIN, winner)
        tabs[owner] = Tab(session, owner=user_owner(owner))  # (as the page names an --auth user)
    votes = votes_of(store, frozenset({"bob"}))
    ada, whose = votes(tabs["ada"])
    assert whose == "your votes" and [vote.winner for vote in ada] == [0]
    everyone, whose = votes(tabs["bob"])
    assert whose.startswith("everyone's") and sorted(vote.winner for vote in everyone) == [0, 1]
    store.delete(user_owner("ada"), tabs["ada"].session.record.chat_id)
    assert votes(tabs["ada"])[0] == []  # a deleted chat's votes leave the leaderboard


def test_a_comparison_reads_back_what_it_wrote_and_leaves_out_what_it_cant():
    comparison = Comparison.from_json({"columns": [{"answer": "x", "label": "L", "changes": "as the chat is"}] * 2,
                                       "outcome": "win", "winner": 1, "blind": True})
    assert comparison.verdict() == "B is better" and Comparison.from_json(comparison.to_json()) == comparison
    odd = Comparison.from_json({"columns": [{"answer": "x"}, {"answer": "y"}], "outcome": "a newer kind", "winner": 9})
    assert odd.outcome is None and odd.winner is None and odd.as_vote() is None
