"""Stream the members of a huge top-level JSON object: ``{key: value, ...}``.

``iter_object_members(fh)`` yields ``(key, value_text)`` one member at a time, reading the
file in chunks and keeping only the current member in memory (MPtrj is one 11 GB object of
``{mp_id: {frame_id: record}}``; ``json.load`` of it needs tens of GB). The member's value
text is parsed by the caller, so a malformed member can be skipped while the object's
structure is intact. Truncation or broken structure raises :class:`JSONStreamError`.

The scanner finds the end of a value by counting brackets outside strings, jumping between
interesting characters with a regex so Python touches only structural characters.
"""

from __future__ import annotations

import json
import re

_SPECIAL = re.compile(r'[{}\[\]"]')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_WS = re.compile(r"\s*")
_SCALAR_END = re.compile(r"[,}\]\s]")
CHUNK = 1 << 22


class JSONStreamError(ValueError):
    """Malformed or truncated top-level JSON object; ``offset`` is a character offset."""

    def __init__(self, message: str, offset: int, key: str | None = None):
        where = f" (near member {key!r})" if key is not None else ""
        super().__init__(f"{message} at character {offset}{where}")
        self.offset, self.key = offset, key


class _Buffer:
    """Sliding text window over a file; ``base`` is the file offset of ``text[0]``."""

    def __init__(self, fh, chunk: int):
        self.fh, self.chunk = fh, chunk
        self.text, self.base, self.eof = "", 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.fh.read(self.chunk)
        if not block:
            self.eof = True
            return False
        self.text += block
        return True

    def drop(self, upto: int) -> None:
        self.text = self.text[upto:]
        self.base += upto

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text) or not self.more():
                return pos


def _value_end(buf: _Buffer, start: int, last_key) -> int:
    """Index just past the JSON value starting at ``buf.text[start]``."""
    first = buf.text[start]
    if first == '"':
        while True:
            m = _STRING.match(buf.text, start)
            if m:
                return m.end()
            if not buf.more():
                raise JSONStreamError("truncated string", buf.base + start, last_key)
    if first not in "{[":
        while True:  # number / true / false / null
            m = _SCALAR_END.search(buf.text, start)
            if m:
                return m.start()
            if not buf.more():
                return len(buf.text)
    depth, pos = 0, start
    while True:
        m = _SPECIAL.search(buf.text, pos)
        if m is None:
            pos = len(buf.text)
            if not buf.more():
                raise JSONStreamError("truncated input inside a value", buf.base + pos,
                                      last_key)
            continue
        ch = m.group()
        if ch == '"':
            s = _STRING.match(buf.text, m.start())
            if s is None:  # string continues past the window
                pos = m.start()
                if not buf.more():
                    raise JSONStreamError("truncated string", buf.base + pos, last_key)
                continue
            pos = s.end()
            continue
        depth += 1 if ch in "{[" else -1
        pos = m.end()
        if depth == 0:
            return pos
        if depth < 0:
            raise JSONStreamError("unbalanced bracket", buf.base + m.start(), last_key)


def iter_object_members(fh, chunk: int = CHUNK):
    """Yield ``(key, value_text, offset)`` for each member of the top-level object in ``fh``."""
    buf = _Buffer(fh, chunk)
    pos = buf.skip_ws(0)
    if pos >= len(buf.text):
        raise JSONStreamError("empty input", 0)
    if buf.text[pos] != "{":
        raise JSONStreamError("expected '{' (top-level JSON object)", buf.base + pos)
    pos = buf.skip_ws(pos + 1)
    last_key = None
    if pos < len(buf.text) and buf.text[pos] == "}":
        return
    while True:
        if pos >= len(buf.text):
            raise JSONStreamError("truncated input, expected a key", buf.base + pos, last_key)
        if buf.text[pos] != '"':
            raise JSONStreamError(f"expected a key string, found {buf.text[pos]!r}",
                                  buf.base + pos, last_key)
        end = _value_end(buf, pos, last_key)
        key = json.loads(buf.text[pos:end])
        pos = buf.skip_ws(end)
        if pos >= len(buf.text) or buf.text[pos] != ":":
            raise JSONStreamError("expected ':'", buf.base + pos, key)
        pos = buf.skip_ws(pos + 1)
        if pos >= len(buf.text):
            raise JSONStreamError("truncated input, expected a value", buf.base + pos, key)
        end = _value_end(buf, pos, key)
        yield key, buf.text[pos:end], buf.base + pos
        last_key = key
        pos = buf.skip_ws(end)
        if pos >= len(buf.text):
            raise JSONStreamError("truncated input, expected ',' or '}'", buf.base + pos, key)
        sep = buf.text[pos]
        if sep == "}":
            return
        if sep != ",":
            raise JSONStreamError(f"expected ',' or '}}', found {sep!r}", buf.base + pos, key)
        pos += 1
        if pos > buf.chunk:  # forget consumed text now and then (keeps reading linear)
            buf.drop(pos)
            pos = 0
        pos = buf.skip_ws(pos)
