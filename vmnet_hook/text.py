"""Text from pods and domain XML made safe to print: one function, standard library only.

Link names, pod names and domain names come from whoever made the pod or wrote the XML;
a control character in one would reach a terminal or a syslog line as it is.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character that ``str.isprintable`` refuses (C0 and C1 controls,
    DEL, line and paragraph separators, format characters such as bidi overrides, lone
    surrogates from undecodable bytes) shown as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
