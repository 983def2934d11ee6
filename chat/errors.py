"""Errors the `chat` package raises for people to read.

Every message is written for the person at the keyboard: it says what went wrong and,
where possible, what to do. The UI turns these into `gr.Error`/chat notices, the CLI into
one line on stderr and an exit code; nobody else catches and rewords them.
"""


class ChatError(Exception):
    """Base class: the message is meant for the user, as is."""


class SettingsError(ChatError):
    """A generation setting is out of range or of the wrong type."""


class SkillError(ChatError):
    """A skill is broken (in `skills.yaml`: the message names file, line, skill and problem).

    `field`: the part of the skill it is about, where one is ("template", "variables.language.default"), for the
    page's editor to name the field as the file's message names the line; `line` (of the file) and `problem` (the
    message less where it is) say the same for a file's error."""

    def __init__(self, message: str, field: str | None = None, line: int | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field, self.line, self.problem = field, line, problem or message


class ModelLoadError(ChatError):
    """The model could not be found, loaded, quantized or placed."""


class ModelUnloaded(ModelLoadError):
    """The model was unloaded after the chat got it: the chat asks the model list again (it loads it)."""


class GenerationError(ChatError):
    """Generation failed or timed out; the conversation is intact and can be retried."""


class ConversationError(ChatError):
    """A conversation (uploaded file, API history) is not in the messages format."""


class StoreError(ChatError):
    """The conversation database can't be opened or used; the message names it (never its password)."""
