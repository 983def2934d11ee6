"""What a user types for a name in the terminal: any case, without the emoji and punctuation, or a part of it."""

from __future__ import annotations

import re


def matching(names: list[str], query: str) -> list[str]:
    """The names `query` means, ignoring case and punctuation: those it equals, else those it begins, else
    those it is part of."""
    wanted = plain(query)
    for matches_word in (str.__eq__, str.startswith, str.__contains__):
        matches = [name for name in names if wanted and matches_word(plain(name), wanted)]
        if matches:
            return matches
    return []


def plain(name: str) -> str:
    """'🔄 Translate to German' → 'translate to german': what a user types for a skill name."""
    return " ".join(re.sub(r"[^\w\s]", " ", name).split()).casefold()
