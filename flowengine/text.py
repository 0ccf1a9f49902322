"""Text every layer writes out: a lone surrogate has no UTF-8 form, so no file, record or reply
can hold it. JSON escapes (``"\\ud800"``) and undecodable command-line bytes make them."""

from __future__ import annotations

import re

#: One UTF-16 surrogate code point, which in a Python string is always a lone one.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, as an undecodable byte would be."""
    if text.isascii():  # answered in constant time: most text needs no search at all
        return text
    return LONE_SURROGATE.sub("\ufffd", text)
