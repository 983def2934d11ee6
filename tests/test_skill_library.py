"""Users' own skills (chat/skill_library.py): owned, versioned, exported and imported, in memory (`--db none`)
and in a real SQLite store."""

from __future__ import annotations

import pytest

from chat.errors import SkillError
from chat.skill_library import SkillLibrary
from chat.skill_variables import Variable
from chat.skills import Skill
from chat.skills_file import load_skills
from chat.store.store import Store

HAIKU = Skill("🧪 Haiku", "Write a haiku about {message}.", "Three lines.", {"temperature": 0.9})
TRANSLATE = Skill("🌍 Translate to", "Into {language}:\n```\n{message}\n```", variables=[Variable("language", default="French")])


@pytest.fixture(params=["memory", "sqlite"])
def library(request, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}").skills if request.param == "sqlite" else None
    return SkillLibrary(load_skills(), store)


def test_a_saved_skill_joins_its_owners_book_alone(library):
    saved = library.save("user:ada", HAIKU, "first try")
    assert saved.version == 1 and saved.command == "haiku"
    assert library.book("user:ada").names()[-1] == "🧪 Haiku" and library.book("user:ada").names()[0] == "💬 Chat"
    assert "🧪 Haiku" not in library.book("user:bob") and library.book("user:bob").names() == library.file_book.names()
    assert library.book("user:ada").get("🧪 Haiku") == HAIKU


def test_each_save_is_a_version_and_an_old_one_comes_back_as_the_newest(library):
    library.save("user:ada", HAIKU, "first try")
    library.save("user:ada", Skill("🧪 Haiku", "A haiku on {message}, please."), "shorter", replacing="🧪 Haiku")
    renamed = library.save("user:ada", Skill("🧪 Haiku 2", "A haiku on {message}, please."), "", replacing="🧪 Haiku")
    assert renamed.version == 3 and library.versions("user:ada", "🧪 Haiku") == []  # (a rename keeps its versions)
    assert [(v.version, v.note) for v in library.versions("user:ada", "🧪 Haiku 2")] == [(3, ""), (2, "shorter"), (1, "first try")]
    back = library.bring_back("user:ada", "🧪 Haiku 2", 1)
    assert back.version == 4 and back.name == "🧪 Haiku" and back.template == HAIKU.template
    assert library.versions("user:ada", "🧪 Haiku")[0].note == "version 1 brought back"


def test_a_name_or_command_taken_is_refused_naming_the_box(library):
    library.save("user:ada", HAIKU)
    for skill, box, words in [(Skill("💎 Summarize", "{message}"), "name", "the skills file has a skill named '💎 Summarize'"),
                              (Skill("🧪 Haiku", "{message}!"), "name", "you have a skill named '🧪 Haiku' already"),
                              (Skill("Sum", "{message}", command="summarize"), "command", "/summarize is the command of '💎 Summarize'")]:
        with pytest.raises(SkillError, match=words) as caught:
            library.save("user:ada", skill)
        assert caught.value.field == box
    assert [saved.name for saved in library.owned("user:ada")] == ["🧪 Haiku"]  # nothing else was saved


def test_a_deleted_skill_comes_back_with_undo_and_the_files_cant_be_deleted(library):
    library.save("user:ada", HAIKU)
    gone = library.delete("user:ada", "🧪 Haiku")
    assert "🧪 Haiku" not in library.book("user:ada")
    library.restore("user:ada", gone)
    assert library.book("user:ada").get("🧪 Haiku").version == 1
    with pytest.raises(SkillError, match="the skills file's can't be deleted"):
        library.delete("user:ada", "💎 Summarize")
    with pytest.raises(SkillError, match="you have no skill named '🧪 Haiku'"):
        library.delete("user:bob", "🧪 Haiku")  # another's skill, by its name


def test_export_then_import_gives_another_user_the_same_skills(library):
    library.save("user:ada", HAIKU)
    library.save("user:ada", TRANSLATE)
    exported = library.export("user:ada")
    assert exported.startswith("# Skills exported from the chat workbench")
    imported = library.import_text("user:bob", exported, "skills.yaml")
    assert [skill.name for skill in imported] == ["🧪 Haiku", "🌍 Translate to"]
    assert [skill for skill in library.book("user:bob")] == [skill for skill in library.book("user:ada")]
    again = library.import_text("user:bob", exported, "skills.yaml")  # a skill they have: its next version
    assert [skill.version for skill in again] == [2, 2]


@pytest.mark.parametrize("text, words", [
    ("skills:\n  - name: ok\n    template: '{message}'\n  - name: bad\n    template: no placeholder\n",
     "mine.yaml, line 5, skill 'bad': template has no {message} placeholder"),
    ("skills:\n  - name: '💎 Summarize'\n    template: '{message}'\n", "'💎 Summarize' is a skill of the app's skills file"),
    ("skills:\n  - name: mine\n    command: summarize\n    template: '{message}'\n", "both have the command /summarize"),
])
def test_an_import_with_a_mistake_saves_nothing(library, text, words):
    with pytest.raises(SkillError, match=words):
        library.import_text("user:bob", text, "mine.yaml")
    assert library.owned("user:bob") == []
