"""Text built from names a user or another user chose (file names, dataset names) made safe to print."""

from __future__ import annotations

import unicodedata

# Line and paragraph separators and bidirectional overrides are not Cc controls but can
# still end a line or reorder what a terminal shows.
_INVISIBLE_FORMAT = (
    {"\u2028", "\u2029", "\u061c", "\u200e", "\u200f"}
    | {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
)


def printable(text: object) -> str:
    r"""``text`` with control characters written as escapes (``\n``, ``\t``, ``\x1b``, ``\u2028``).

    A file named ``"a\ncreated\tfake"`` would otherwise forge a line of ``mdlma catalogue
    ingest`` output or an error message, and escape sequences could rewrite the
    terminal. The CLI passes every error message, log message and line built from
    names through this one function.

    Parameters
    ----------
    text : object
        Anything; it is converted with ``str`` first.

    Returns
    -------
    str
        The same text where each control, line-separator or bidirectional-override
        character is replaced by its Python escape; everything else is kept as is.

    Examples
    --------
    >>> printable("scan\nexists\t123")
    'scan\\nexists\\t123'
    >>> printable("ümlaut µm.tif")
    'ümlaut µm.tif'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        _escape(c) if unicodedata.category(c) == "Cc" or c in _INVISIBLE_FORMAT else c for c in text
    )


def shorten(text: object, limit: int = 200) -> str:
    """:func:`printable` ``text``, cut to ``limit`` characters with ``…`` where it was longer.

    For echoing what a user typed (a 6,000-character folder) in a one-line message.

    Examples
    --------
    >>> shorten("/data/" + "a" * 300, limit=12)
    '/data/aaaaa…'
    """
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(char: str) -> str:
    escaped = repr(char)[1:-1]
    # repr leaves some format characters (e.g. U+2028 on some builds) as they are.
    return escaped if escaped != char else f"\\u{ord(char):04x}"
