"""How a text sounds, as a key a lexical index can match: what speech recognition mishears comes
out spelled differently but sounding alike, often split at other places ("reef and" for "refund").

The key is Metaphone (jellyfish) of the text's letters run together, so word boundaries do not
count: "reef and", "re fund" and "refund" all give RFNT, "return" gives RTRN. Metaphone's rules are
English; for other Latin-script languages it still reduces a word to its consonant skeleton, which
is what their mishearings keep too. Scripts without Latin letters (Chinese, Japanese) give an empty
key: for them the written form is all the evidence there is.
"""

from __future__ import annotations

import unicodedata

import jellyfish


def sound_key(text: str) -> str:
    """The Metaphone key of ``text``'s Latin letters (accents dropped) run together; "" if none."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    letters = "".join(c for c in decomposed if "a" <= c <= "z")
    return jellyfish.metaphone(letters) if letters else ""
