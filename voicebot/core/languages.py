"""One spelling for language tags.

Clients, config files, Whisper and locale files write the same language many ways (``zh_CN``,
``zh-Hans``, `` en-US``). Every part that compares or looks up a language goes through
``normalise_language_tag`` so that they all agree on what a tag means.
"""

from __future__ import annotations

# Chinese is served in two written forms: simplified (``zh``) and traditional (``zh-tw``).
_SIMPLIFIED = frozenset({"zh-cn", "zh-hans", "zh-sg", "zh-my"})
_TRADITIONAL = frozenset({"zh-tw", "zh-hk", "zh-mo", "zh-hant"})


def normalise_language_tag(code: str) -> str:
    """Lower-case, ``-``-separated, trimmed; Chinese regions and scripts folded to ``zh``/``zh-tw``.

    ``zh-Hans-CN`` and ``zh_Hant_TW`` carry the script first: the script decides. Any other tag
    keeps its region (``en-us``): callers that want the base language split it off themselves,
    since some (locale files, privacy patterns) do have regional entries.
    """
    tag = code.strip().lower().replace("_", "-")
    if tag in _SIMPLIFIED or tag.startswith("zh-hans-"):
        return "zh"
    if tag in _TRADITIONAL or tag.startswith("zh-hant-"):
        return "zh-tw"
    return tag
