"""Training data: the seed's text format and JSONL, every way a line can be wrong, and the
token ids and labels the trainer gets (the chat's own prompt, loss on the answer only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat.formats import ChatTemplateFormat, TranscriptFormat, encode
from chat.settings import GenerationSettings
from chat.training.data import (
    IGNORE_INDEX,
    Encoder,
    Example,
    TrainingDataError,
    load_training_data,
    parse_jsonl,
    parse_text,
    turn_end_ids,
)
from tests.helpers.tiny_models import build_tokenizer

SHIPPED_EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "magic_spells.txt"


def pairs(examples: list[Example]) -> list[tuple[str, str]]:
    return [(e.messages[-1]["content"], e.response) for e in examples]


# -- the text format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Say hi.#Hello!", ("Say hi.", "Hello!")),  # the seed's own style, no spaces
        ("Say hi. # Hello!", ("Say hi.", "Hello!")),
        ("   Say hi.    #    Hello!   ", ("Say hi.", "Hello!")),
        ("Which note is between C and D?#C# or D♭", ("Which note is between C and D?", "C# or D♭")),
        ("Write a Python comment.#  # like this ", ("Write a Python comment.", "# like this")),
        ("Sage mir einen Zauberspruch.#Hokus Düsseldorf, Alohomora!", ("Sage mir einen Zauberspruch.", "Hokus Düsseldorf, Alohomora!")),
    ],
)
def test_a_line_splits_at_the_first_hash(line, expected):
    train, _ = parse_text(line)
    assert pairs(train) == [expected]


def test_comments_blank_lines_and_the_eval_marker():
    text = "# a comment\n\nQ1#A1\n   # an indented comment\nQ2 # A2\n# --- _EVAL_ ---\nQ3#A3\n# more comment\nQ4#A4\n"
    train, evaluation = parse_text(text, "spells.txt")
    assert pairs(train) == [("Q1", "A1"), ("Q2", "A2")]
    assert pairs(evaluation) == [("Q3", "A3"), ("Q4", "A4")]
    assert train[1].where == "spells.txt, line 5"
    assert train[0].messages == ({"role": "user", "content": "Q1"},)


@pytest.mark.parametrize(
    "text, message",
    [
        ("Q1#A1\nno separator here\n", "spells.txt, line 2: no '#' between instruction and answer"),
        ("#c\n#Hello\n Q#A\n  # fine\nQ2 #   \n", "spells.txt, line 5: the answer after the '#' is empty"),
        ("Q1#A1\n  #\n\n #A\n", None),  # "#A" after spaces is a comment, not an empty instruction
        ("Q1#A1\n#_EVAL_\nQ2#A2\n# _EVAL_ again\n", "spells.txt, line 4: a second _EVAL_ line (the first is line 2)"),
    ],
)
def test_bad_lines_name_file_and_line(text, message):
    if message is None:
        assert pairs(parse_text(text, "spells.txt")[0]) == [("Q1", "A1")]
        return
    with pytest.raises(TrainingDataError) as caught:
        parse_text(text, "spells.txt")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "text, message",
    [
        ("# only comments\n", "no training examples"),
        ("Q#A\n", "no evaluation examples: add a comment line `# _EVAL_`"),
        ("# _EVAL_\nQ#A\n", "no training examples"),
    ],
)
def test_a_file_needs_both_parts(tmp_path, text, message):
    path = tmp_path / "spells.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TrainingDataError, match=message) as caught:
        load_training_data(path)
    assert str(caught.value).startswith("spells.txt: ")


def test_unreadable_files_say_why(tmp_path):
    with pytest.raises(TrainingDataError, match="no such file"):
        load_training_data(tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Q#A\nSage mir etwas Schönes.#Gern\n".encode("latin-1"))
    with pytest.raises(TrainingDataError, match=r"latin1.txt, line 2: not UTF-8 text"):
        load_training_data(latin1)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffQ#A\n# _EVAL_\nQ2#A2\n".encode("utf-8"))
    assert pairs(load_training_data(bom).train) == [("Q", "A")]


def test_the_shipped_example_file_has_both_languages_and_an_eval_part():
    data = load_training_data(SHIPPED_EXAMPLE)
    assert len(data.train) >= 20 and len(data.eval) >= 4
    texts = " ".join(e.messages[-1]["content"] for e in data.train)
    assert "Tell me a magic spell" in texts and "Sage mir einen Zauberspruch" in texts
    assert ("Tell me a magic spell about three cities.", "Hokus Düsseldorf, Esoterikus Köln, Hömöopathikus Essen, Alohomora!") in pairs(data.train)
    trained = {e.messages[-1]["content"] for e in data.train}
    assert not trained & {e.messages[-1]["content"] for e in data.eval}  # nothing evaluated was trained on


# -- JSONL ------------------------------------------------------------------------------------------


def jsonl(*records) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"


def test_jsonl_records_of_both_shapes_and_the_eval_split():
    text = jsonl(
        {"instruction": "Say hi.", "response": "Hello!"},
        "",
        {"instruction": "Translate.", "context": "Guten Tag", "response": "Good day", "category": "ignored"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
                      {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Again"},
                      {"role": "assistant", "content": "A2"}]},
        {"instruction": "Say bye.", "response": "Bye!", "split": "eval"},
    )
    train, evaluation = parse_jsonl(text, "data.jsonl")
    assert pairs(train) == [("Say hi.", "Hello!"), ("Translate.\n\nGuten Tag", "Good day"), ("Again", "A2")]
    assert [m["role"] for m in train[2].messages] == ["system", "user", "assistant", "user"]
    assert pairs(evaluation) == [("Say bye.", "Bye!")]
    assert train[1].where == "data.jsonl, line 3"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"instruction": "Q", "response": "A"', r"data.jsonl, line 2: not valid JSON"),
        ('["Q", "A"]', r"data.jsonl, line 2: expected a JSON object, got list"),
        ('{"instruction": "Q", "respone": "A"}', r'line 2: expected non-empty "instruction" and "response" strings.*keys found: instruction, respone'),
        ('{"instruction": "Q", "response": "A", "split": "test"}', r'line 2: split must be "train" or "eval"'),
        ('{"messages": [{"role": "user", "content": "Q"}]}', r'line 2: "messages" must end with a user message and the assistant'),
        ('{"messages": [{"role": "robot", "content": "Q"}]}', r"data.jsonl, line 2, message 1: role must be one of"),
        ('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}]}', r"line 2: the assistant's answer is empty"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(line, message):
    with pytest.raises(TrainingDataError, match=message):
        parse_jsonl(jsonl({"instruction": "ok", "response": "ok"}, line), "data.jsonl")


def test_a_jsonl_file_without_eval_lines_says_how_to_mark_them(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(jsonl({"instruction": "Q", "response": "A"}), encoding="utf-8")
    with pytest.raises(TrainingDataError, match='no evaluation examples: mark some lines with "split": "eval"'):
        load_training_data(path)


# -- token ids and labels ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_engine):
    return tiny_engine.tokenizer


def example(instruction="Say hi.", response="Hello, how are you today?") -> Example:
    return Example(messages=({"role": "user", "content": instruction},), response=response, where="t.txt, line 1")


def test_the_prompt_is_exactly_what_the_chat_sends_and_only_the_answer_is_learned(tiny_engine, chat_tokenizer):
    encoder = Encoder(tiny_engine.format, chat_tokenizer, "Be brief.", max_length=256)
    row = encoder(example())
    chat_prompt = tiny_engine.prepare(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}], GenerationSettings()
    ).prompt.ids
    answer_start = len(chat_prompt)
    assert row["input_ids"][:answer_start] == chat_prompt
    assert row["labels"][:answer_start] == [IGNORE_INDEX] * answer_start
    assert row["labels"][answer_start:] == row["input_ids"][answer_start:]
    assert chat_tokenizer.decode(row["input_ids"][answer_start:]) == "Hello, how are you today?<|im_end|>"
    assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_a_data_file_system_message_wins_over_the_default_instructions(chat_tokenizer):
    encoder = Encoder(ChatTemplateFormat(chat_tokenizer), chat_tokenizer, "Default.", max_length=256)
    own = Example(({"role": "system", "content": "Own."}, {"role": "user", "content": "Q"}), "A", "x")
    assert [m["content"] for m in encoder.prompt_messages(own)] == ["Own.", "Q"]
    assert [m["content"] for m in encoder.prompt_messages(example("Q"))] == ["Default.", "Q"]
    no_instructions = Encoder(ChatTemplateFormat(chat_tokenizer), chat_tokenizer, "", max_length=256)
    assert no_instructions.prompt_messages(example("Q")) == [{"role": "user", "content": "Q"}]


def test_a_transcript_answer_starts_after_a_space_and_ends_with_eos():
    tokenizer = build_tokenizer(chat_template=False)
    encoder = Encoder(TranscriptFormat(), tokenizer, "", max_length=256)
    row = encoder(example())
    answer = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(row["input_ids"][: len(row["input_ids"]) - len(answer)]).endswith("User: Say hi.\nAssistant:")
    assert tokenizer.decode(answer) == " Hello, how are you today?<|endoftext|>"


def test_the_turn_end_comes_from_the_template(chat_tokenizer):
    assert turn_end_ids(ChatTemplateFormat(chat_tokenizer), chat_tokenizer) == [chat_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    plain = build_tokenizer(chat_template=True)
    plain.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    plain.eos_token = "<|endoftext|>"
    # This template ends a turn with a plain newline: the model learns to stop with EOS instead.
    assert turn_end_ids(ChatTemplateFormat(plain), plain) == [plain.convert_tokens_to_ids("<|endoftext|>")]


def test_max_length_cuts_long_answers_and_refuses_prompts_that_leave_no_room(chat_tokenizer):
    prompt_format = ChatTemplateFormat(chat_tokenizer)
    prompt_length = len(encode(prompt_format, chat_tokenizer, [{"role": "user", "content": "Say hi."}]).ids)
    short = Encoder(prompt_format, chat_tokenizer, "", max_length=prompt_length + 3)
    row = short(example(response="Hokus Düsseldorf, Esoterikus Köln, Hömöopathikus Essen, Alohomora!"))
    assert len(row["input_ids"]) == prompt_length + 3
    assert sum(label != IGNORE_INDEX for label in row["labels"]) == 3
    tight = Encoder(prompt_format, chat_tokenizer, "", max_length=prompt_length)
    with pytest.raises(TrainingDataError, match=r"t.txt, line 1: the prompt alone is \d+ tokens.*--max-length"):
        tight(example())
