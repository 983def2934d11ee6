"""A local LLM chat workbench: load a model, format prompts with skills, stream answers.

Importing this package loads no model, opens no port and reads no file; `app.py` and
`python -m chat` do that at their edges.
"""

from .errors import ChatError, ConversationError, GenerationError, ModelLoadError, SettingsError, SkillError
from .settings import GenerationSettings

__all__ = [
    "ChatError", "ConversationError", "GenerationError", "ModelLoadError", "SettingsError", "SkillError",
    "GenerationSettings",
]
