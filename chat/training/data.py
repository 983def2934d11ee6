"""Training data: instruction files read into examples, and examples into token ids and labels.

Two file formats (README, "Teaching the model new instructions"):

* text, as in the seed tutorial: one `instruction # answer` per line, split at the first `#`
  (so an answer may hold `#`); lines starting with `#` are comments; the comment line that
  holds `_EVAL_` starts the evaluation part, which is never trained on.
* JSONL: one object per line, `{"instruction": …, "response": …}` (an optional `context` is
  appended to the instruction, as in Dolly-15k) or `{"messages": [... , {"role": "assistant", …}]}`;
  `"split": "eval"` puts a line into the evaluation part.

Every mistake is one `TrainingDataError` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..messages import Message, normalize_messages
from ..request import model_messages
from ..errors import ChatError, ConversationError
from ..formats import PromptFormat, control_token_ids, encode

EVAL_MARKER = "_EVAL_"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
SPLITS = ("train", "eval")
IGNORE_INDEX = -100  # label value the loss skips: prompt tokens and padding


class TrainingDataError(ChatError):
    """The training file is unreadable or a line is malformed; the message names file and line."""


@dataclass(frozen=True)
class Example:
    """One thing to learn: given `messages` (the last one the user's), answer `response`."""

    messages: tuple[Message, ...]
    response: str
    where: str  # "magic_spells.txt, line 7", for error messages


@dataclass(frozen=True)
class TrainingSet:
    train: list[Example]
    eval: list[Example]
    source: str


# -- reading files --------------------------------------------------------------------------------


def load_training_data(path: str | Path) -> TrainingSet:
    """Reads a text or JSONL instruction file; both parts must hold at least one example."""
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        train, evaluation = parse_jsonl(text, path.name)
        how_to_eval = 'mark some lines with "split": "eval"'
    else:
        train, evaluation = parse_text(text, path.name)
        how_to_eval = f"add a comment line `# {EVAL_MARKER}` and put evaluation lines after it"
    if not train:
        raise TrainingDataError(f"{path.name}: no training examples (expected lines like `instruction # answer`)")
    if not evaluation:
        raise TrainingDataError(f"{path.name}: no evaluation examples: {how_to_eval}")
    return TrainingSet(train=train, eval=evaluation, source=str(path))


def parse_text(text: str, source: str = "data.txt") -> tuple[list[Example], list[Example]]:
    """The seed's format → (train, eval) examples.

    >>> parse_text("Say hi. # Hi!\\n# _EVAL_\\nSay bye.#Bye!")[1][0].response
    'Bye!'
    """
    parts: dict[str, list[Example]] = {"train": [], "eval": []}
    part, marker_line = "train", None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        where = f"{source}, line {number}"
        if stripped.startswith("#"):
            if EVAL_MARKER in stripped:
                if marker_line is not None:
                    raise TrainingDataError(f"{where}: a second {EVAL_MARKER} line (the first is line {marker_line})")
                part, marker_line = "eval", number
        elif stripped:
            parts[part].append(_text_example(stripped, where))
    return parts["train"], parts["eval"]


def parse_jsonl(text: str, source: str = "data.jsonl") -> tuple[list[Example], list[Example]]:
    """JSONL records → (train, eval) examples; `"split": "eval"` marks evaluation records."""
    parts: dict[str, list[Example]] = {"train": [], "eval": []}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainingDataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise TrainingDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        split = record.get("split", "train")
        if split not in SPLITS:
            raise TrainingDataError(f"{where}: split must be \"train\" or \"eval\", got {split!r}")
        parts[split].append(_record_example(record, where))
    return parts["train"], parts["eval"]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # (a BOM, as some Windows editors write, is fine)
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TrainingDataError(f"{path}: is a folder; pass a .txt or .jsonl file") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise TrainingDataError(f"{path.name}, line {line}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as error:
        raise TrainingDataError(f"{path}: can't read the file ({error.strerror or error})") from None


def _text_example(line: str, where: str) -> Example:
    instruction, separator, answer = line.partition("#")
    instruction, answer = instruction.strip(), answer.strip()
    if not separator:
        raise TrainingDataError(f"{where}: no '#' between instruction and answer (expected `instruction # answer`)")
    if not answer:  # (an empty instruction can't happen: a line starting with '#' is a comment)
        raise TrainingDataError(f"{where}: the answer after the '#' is empty (expected `instruction # answer`)")
    return Example(messages=({"role": "user", "content": instruction},), response=answer, where=where)


def _record_example(record: dict[str, Any], where: str) -> Example:
    if "messages" in record:
        return _messages_example(record["messages"], where)
    instruction, response = record.get("instruction"), record.get("response")
    if not (isinstance(instruction, str) and instruction.strip() and isinstance(response, str) and response.strip()):
        keys = ", ".join(sorted(record)) or "none"
        raise TrainingDataError(
            f"{where}: expected non-empty \"instruction\" and \"response\" strings, or \"messages\" (keys found: {keys})"
        )
    context = record.get("context")
    if isinstance(context, str) and context.strip():
        instruction = f"{instruction.strip()}\n\n{context.strip()}"
    return Example(messages=({"role": "user", "content": instruction.strip()},), response=response.strip(), where=where)


def _messages_example(data: Any, where: str) -> Example:
    try:
        messages = normalize_messages(data, where)
    except ConversationError as error:
        raise TrainingDataError(str(error)) from None
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise TrainingDataError(f"{where}: \"messages\" must end with a user message and the assistant's answer")
    if not messages[-1]["content"].strip():
        raise TrainingDataError(f"{where}: the assistant's answer is empty")
    prompt = tuple(Message(role=m["role"], content=m["content"]) for m in messages[:-1])
    return Example(messages=prompt, response=messages[-1]["content"], where=where)


# -- token ids and labels -------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoder:
    """Turns examples into model inputs with exactly the prompt the chat will send.

    The prompt is built by `chat.formats.encode`, the code the engine uses, so the model is
    trained on the same token ids it will later see; the loss covers only the answer.
    """

    prompt_format: PromptFormat
    tokenizer: Any
    instructions: str  # system instructions the chat sends by default ("" = none)
    max_length: int

    def __call__(self, example: Example) -> dict[str, list[int]]:
        prompt = encode(self.prompt_format, self.tokenizer, self.prompt_messages(example)).ids
        if len(prompt) >= self.max_length:
            raise TrainingDataError(
                f"{example.where}: the prompt alone is {len(prompt)} tokens, leaving no room for the answer "
                f"within --max-length {self.max_length}; raise --max-length or shorten the instruction"
            )
        answer = self.answer_ids(example.response)[: self.max_length - len(prompt)]
        return {
            "input_ids": prompt + answer,
            "attention_mask": [1] * (len(prompt) + len(answer)),
            "labels": [IGNORE_INDEX] * len(prompt) + answer,
        }

    def prompt_messages(self, example: Example) -> list[Message]:
        return model_messages(example.messages, self.instructions)

    def answer_ids(self, response: str) -> list[int]:
        """The answer's tokens and the token that ends the model's turn (so it learns to stop)."""
        # A transcript prompt ends in "Assistant:"; the answer starts after a space.
        text = " " + response if self.prompt_format.strips_answer_space else response
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return list(ids) + turn_end_ids(self.prompt_format, self.tokenizer)


def turn_end_ids(prompt_format: PromptFormat, tokenizer: Any) -> list[int]:
    """The control token the chat template writes after an answer (`<|im_end|>`, `<|eot_id|>` …),
    else the tokenizer's end-of-sequence token: the engine stops generating at either."""
    marker = "\u2063ANSWER\u2063"
    if prompt_format.name == "chat-template":
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}], tokenize=False
            )
        except Exception:  # jinja raises its own types; fall back to the EOS token
            text = ""
        if marker in text:
            after = tokenizer(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
            if after and after[0] in control_token_ids(tokenizer):
                return [after[0]]
    if tokenizer.eos_token_id is None:
        raise TrainingDataError("this tokenizer has no end-of-sequence token, so the model could not learn to stop")
    return [tokenizer.eos_token_id]


def count_examples(train_rows: list[dict[str, list[int]]], eval_rows: list[dict[str, list[int]]]) -> dict[str, int]:
    """Examples and answer tokens (what the loss covers) in each part, for the report."""

    def answer_tokens(rows: list[dict[str, list[int]]]) -> int:
        return sum(sum(1 for label in row["labels"] if label != IGNORE_INDEX) for row in rows)

    return {
        "train_examples": len(train_rows), "eval_examples": len(eval_rows),
        "train_answer_tokens": answer_tokens(train_rows), "eval_answer_tokens": answer_tokens(eval_rows),
    }
