"""Default system instructions, in the spirit of the course notebooks, and reading them from flags."""

from __future__ import annotations

from pathlib import Path

from .errors import ChatError

# For models with a chat template: short, because small models follow short instructions best.
CHAT_INSTRUCTIONS = (
    "You are a helpful, knowledgeable and honest assistant. Answer the user's questions clearly and "
    "concisely, in the language the user writes in. If you don't know something, say so."
)

# For base models: the notebooks' transcript framing, which sets up a conversation to continue.
TRANSCRIPT_INSTRUCTIONS = (
    "The following is a conversation between a highly knowledgeable and intelligent AI assistant, "
    "called {bot}, and a human user, called {user}. {bot} answers {user}'s questions respectfully, "
    "politely and truthfully, and says so when it does not know. The conversation begins."
)


def default_instructions(prompt_format) -> str:
    if prompt_format.name == "transcript":
        return TRANSCRIPT_INSTRUCTIONS.format(user=prompt_format.user_name, bot=prompt_format.bot_name)
    return CHAT_INSTRUCTIONS


def read_instructions(value: str | None) -> str | None:
    """`--instructions` takes text, or a path to a text file (read when it exists)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and path.is_file():
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ChatError(f"--instructions: can't read {path}: {error}") from None
    return value
