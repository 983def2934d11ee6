"""Skills in a chat (chat/session.py): /commands, variables, the version an answer was made with and Reproduce,
Try apart from the chat, and attached text checked against the context window. Real tiny model and tokenizer."""

from __future__ import annotations

import re

import pytest

from chat.attachments import AttachmentError, read_attachment, split_attachment, with_attachment
from chat.errors import ChatError, SkillError
from chat.skill_library import SkillLibrary
from chat.skill_variables import Variable
from chat.skills import Skill
from chat.skills_file import load_skills
from chat.web.tabs import Tab
from chat.web.view import chat_messages, provenance_view
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

TRANSLATE = Skill("🌍 Translate to", "Translate into {language}.\n```\n{message}\n```",
                  variables=[Variable("language", "choice", "French", True, ("German", "French"))])


@pytest.fixture
def library():
    return SkillLibrary(load_skills())


@pytest.fixture
def session(tiny_engine, library):
    return seeded_session(tiny_engine, lambda: library.book("user:ada"), settings=greedy(8))


def test_a_command_picks_its_skill_for_that_message_alone(session):
    "".join(session.send("/summarize The cat sat on the mat all day."))
    "".join(session.send("And then?"))
    asked = [(m["skill"], m["typed"]) for m in session.history if m["role"] == "user"]
    assert asked == [("💎 Summarize", "The cat sat on the mat all day."), ("💬 Chat", "And then?")]
    assert "The cat sat on the mat all day." in session.history[0]["content"] and session.history[0]["content"].startswith("Summarize")


@pytest.mark.parametrize("text, words", [("/nosuch hello", "unknown command /nosuch: /skills lists"),
                                         ("/summarize   ", "type a message after /summarize")])
def test_an_unknown_or_empty_command_is_refused_and_changes_nothing(session, text, words):
    with pytest.raises(ChatError, match=words):
        session.post(text)
    assert session.history == []


def test_a_saved_skill_is_usable_at_once_and_its_values_are_kept_with_the_message_and_the_answer(session, library):
    library.save("user:ada", TRANSLATE, "first")
    "".join(session.send("Good morning", "🌍 Translate to", values={"language": "German"}))
    question, answer = session.history
    assert question["values"] == {"language": "German"} and question["content"].startswith("Translate into German.")
    provenance = answer["provenance"]
    assert provenance.values == {"language": "German"} and provenance.skill_version == 1
    assert provenance.skill_definition == TRANSLATE.to_data()
    "".join(session.retry())  # Retry wraps the message again, with the same values
    assert session.history[0]["content"].startswith("Translate into German.")
    with pytest.raises(SkillError, match="language must be one of German, French"):
        session.post("Hi", "🌍 Translate to", {"language": "Klingon"})
    "".join(session.send("/translate-to Hello"))  # a command: the skill's defaults
    assert session.history[-2]["values"] == {"language": "French"}


def test_reproduce_uses_the_version_the_answer_was_made_with_and_the_panel_says_so(session, library):
    library.save("user:ada", TRANSLATE, "first")
    first = "".join(session.send("Good morning", "🌍 Translate to"))
    made = session.history[-1]["provenance"].parts[0].prompt
    library.save("user:ada", Skill("🌍 Translate to", "Please put this into {language}:\n```\n{message}\n```",
                                   variables=TRANSLATE.variables), "politer", replacing="🌍 Translate to")
    again = "".join(session.reproduce())
    reproduction = session.history[-1]["provenance"]
    assert reproduction.parts[0].prompt == made and again == first  # version 1's prompt, so the same greedy answer
    assert reproduction.skill_version == 1 and "notice" not in session.history[-1]
    shown = provenance_view(Tab(session))
    assert "🌍 Translate to · version 1 (it is at version 2 now: Reproduce uses version 1)" in shown
    "".join(session.retry())  # Retry is a new answer, now: the skill as it is
    assert session.history[-1]["provenance"].skill_version == 2
    assert session.history[-1]["provenance"].parts[0].prompt != made


def test_try_answers_apart_from_the_chat(session, library):
    "".join(session.send("Hello"))
    before = [dict(m) for m in session.history]
    prompt = session.trial_prompt(TRANSLATE, "Good morning", {"language": "German"})
    assert "Translate into German." in prompt.prompt.text and "Hello" not in prompt.prompt.text  # the chat is not in it
    generation = session.trial(TRANSLATE, "Good morning", {"language": "German"})
    text = "".join(generation)
    assert generation.stats.stop_reason is not None and generation.fitted.prompt.text == prompt.prompt.text and text == generation.text
    assert [dict(m) for m in session.history] == before


def test_an_attached_file_is_the_messages_material_and_shows_by_its_name(session, tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nThe meeting moved to Friday. ```code``` too.\n", encoding="utf-8")
    attachment = read_attachment(path)
    text = with_attachment("What changed?", attachment)
    assert text.startswith("What changed?\n\nnotes.md:\n````\n# Notes") and text.endswith("too.\n````")  # fenced past its ```
    assert split_attachment(text, "notes.md") == ("What changed?", text.split("\n\n", 1)[1])
    session.check_fits("What changed?", "💎 Summarize", None, attachment)
    "".join(session.send("What changed?", "💎 Summarize", attachment=attachment))
    assert "The meeting moved to Friday." in session.history[0]["content"]
    shown = chat_messages(session)[0]["content"]
    assert shown.endswith("What changed?\n\n📎 notes.md") and "Friday" not in shown
    session.edit(0, "What moved?")  # the chat shows the file by its name: the edit keeps it
    assert session.history[0]["typed"].startswith("What moved?\n\nnotes.md:\n````") and session.history[0]["attached"] == "notes.md"
    "".join(session.send("/summarize", attachment=attachment))  # a command and a file alone: the file is the text
    assert session.history[-2]["skill"] == "💎 Summarize" and chat_messages(session)[-2]["content"] == "💎 Summarize: 📎 notes.md"


def test_a_file_too_large_for_the_context_is_refused_with_the_numbers(session, tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("word " * 5000, encoding="utf-8")
    with pytest.raises(ChatError) as refused:
        session.check_fits("", "💎 Summarize", None, read_attachment(path))
    said = str(refused.value)
    window = session.engine.context_window
    assert said.startswith("big.txt does not fit: with it the prompt would be ") and f"its {window:,}-token context" in said
    assert session.history == []


@pytest.mark.parametrize("data, words", [(b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
                                         (b"caf\xe9 au lait", "line 1: not UTF-8 text (byte 0xe9)"),
                                         (b"   \n", "the file holds no text"),
                                         (b"%PDF-1.4 broken", "can't read this PDF")])
def test_a_file_that_is_no_text_is_refused_naming_it(tmp_path, data, words):
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    with pytest.raises(AttachmentError, match=f"file.bin.*{re.escape(words)}"):
        read_attachment(path)


def test_a_pdfs_text_is_read(tmp_path):
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(300, 200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    content = DecodedStreamObject()
    content.set_data(b"BT /F1 12 Tf 20 100 Td (The meeting moved to Friday.) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(content)
    path = tmp_path / "minutes.pdf"
    with path.open("wb") as out:
        writer.write(out)
    assert read_attachment(path).text.strip() == "The meeting moved to Friday."
