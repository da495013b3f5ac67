"""Arguments in and bytes out: the admin shell's quoting rules.

Keys and values are arbitrary bytes, but a command line is typed text.  So
`split` reads a line the way a shell would, with two additions for binary
data, and `quote` prints bytes so that the printed form can be typed back:

- words are separated by spaces or tabs;
- ``"..."`` groups words; inside it (and in bare words) a backslash escapes:
  ``\\xNN`` (a byte in hex), ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\\\``,
  ``\\"``, ``\\'``, ``\\ `` (a space);
- ``'...'`` is literal except for ``\\'`` and ``\\\\``;
- ``x'00ff'`` (or ``X'..'``) as a whole word is hex;
- quoted and bare parts next to each other form one word (``a"b c"`` is
  ``ab c``); ``""`` is the empty word.

Bytes that are not valid UTF-8 are kept as they are: a word is ``bytes``.
"""

import re

_SPACE = b" \t"
_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("0"): b"\0",
    ord("\\"): b"\\",
    ord('"'): b'"',
    ord("'"): b"'",
    ord(" "): b" ",
}
_HEX_WORD = re.compile(rb"[xX]'([^']*)'")
_HEX_DIGITS = re.compile(rb"(?:[0-9a-fA-F]{2})*")


class QuotingError(ValueError):
    """The line cannot be split; the message says what to type instead."""


def split(line):
    """Split ``line`` (bytes) into a list of ``bytes`` words."""
    words = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return words
        m = _HEX_WORD.match(line, i)
        if m and (m.end() == n or line[m.end()] in _SPACE):
            words.append(_hex(m.group(1)))
            i = m.end()
            continue
        word, i = _word(line, i)
        words.append(word)


def _hex(digits):
    if not _HEX_DIGITS.fullmatch(digits):
        raise QuotingError(
            "bad hex literal x'%s': use an even number of hex digits, "
            "e.g. x'00ff'" % digits.decode("ascii", "backslashreplace")
        )
    return bytes.fromhex(digits.decode("ascii"))


def _word(line, i):
    out = bytearray()
    n = len(line)
    while i < n and line[i] not in _SPACE:
        c = line[i]
        if c == ord('"'):
            i = _quoted(line, i + 1, out, b'"', _escape)
        elif c == ord("'"):
            i = _quoted(line, i + 1, out, b"'", _single_escape)
        elif c == ord("\\"):
            i = _escape(line, i, out)
        else:
            out.append(c)
            i += 1
    return bytes(out), i


def _quoted(line, i, out, quote, escape):
    n = len(line)
    while i < n:
        c = line[i]
        if c == quote[0]:
            return i + 1
        if c == ord("\\"):
            i = escape(line, i, out)
        else:
            out.append(c)
            i += 1
    raise QuotingError(
        "unterminated %s quote: end the word with %s"
        % ("double" if quote == b'"' else "single", quote.decode())
    )


def _escape(line, i, out):
    """``line[i]`` is a backslash; append what it escapes, return the next
    position."""
    if i + 1 >= len(line):
        raise QuotingError("a line cannot end with a backslash: write \\\\ for one")
    c = line[i + 1]
    if c in (ord("x"), ord("X")):
        digits = line[i + 2 : i + 4]
        if len(digits) != 2 or not _HEX_DIGITS.fullmatch(digits):
            raise QuotingError(
                "bad escape \\x%s: \\x needs two hex digits, e.g. \\x00"
                % digits.decode("ascii", "backslashreplace")
            )
        out.append(int(digits, 16))
        return i + 4
    if c in _ESCAPES:
        out += _ESCAPES[c]
        return i + 2
    raise QuotingError(
        "unknown escape \\%s: use \\xNN for a byte, \\\\ for a backslash"
        % chr(c)
        if 0x20 < c < 0x7F
        else "unknown escape after a backslash: use \\xNN for a byte"
    )


def _single_escape(line, i, out):
    if i + 1 < len(line) and line[i + 1] in (ord("'"), ord("\\")):
        out.append(line[i + 1])
        return i + 2
    out.append(line[i])
    return i + 1


# -- output -----------------------------------------------------------------

_BARE = re.compile(rb"[A-Za-z0-9_./:@%+=,-][A-Za-z0-9_./:@%+=,!#$&()*;<>?\[\]^`{|}~-]*")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def quote(data, limit=None):
    """``data`` (bytes) as text that `split` reads back as the same bytes.

    Plain words are printed bare; anything else in double quotes, with
    printable UTF-8 kept and every other byte as ``\\xNN``.  With ``limit``,
    at most that many bytes are shown and ``...(N bytes)`` says how many
    there are.
    """
    shown = data if limit is None or len(data) <= limit else data[:limit]
    if shown == data and _BARE.fullmatch(data) and not _HEX_WORD.fullmatch(data):
        return data.decode("ascii")
    text = shown.decode("utf-8", "surrogateescape")
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not valid UTF-8
            out.append("\\x%02x" % (ord(ch) - 0xDC00))
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend("\\x%02x" % b for b in ch.encode("utf-8"))
    out.append('"')
    if shown is not data:
        out.append("...(%d bytes)" % len(data))
    return "".join(out)
