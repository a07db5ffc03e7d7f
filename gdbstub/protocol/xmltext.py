"""XML text and attribute quoting for the ``qXfer`` documents (target
description, library lists, osdata).

The same results as ``xml.sax.saxutils.escape`` and ``quoteattr``, without
importing them: ``xml.sax.saxutils`` pulls in ``urllib.request`` (and with it
``http.client``, ``ssl``'s friends, ``email``), about 15 ms of every start of
``wasm-gdbstub serve`` for three replacements.
"""
from __future__ import annotations

# XML 1.0 section 2.4 ("Character Data and Markup"): & and < must be escaped
# in text, > is escaped as saxutils does; in an attribute value (section 3.3.3,
# "Attribute-Value Normalization") whitespace characters other than the space
# are escaped as character references, or a parser would normalize them.
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIBUTE_WHITESPACE = str.maketrans({"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def escape(text: str) -> str:
    """``text`` as XML character data (``&``, ``<``, ``>`` escaped)."""
    return text.translate(_TEXT)


def quoteattr(text: str) -> str:
    """``text`` as a quoted XML attribute value, quotes included: double
    quotes unless the value has a double quote and no single one (then
    single quotes), ``&quot;`` when it has both."""
    text = text.translate(_TEXT).translate(_ATTRIBUTE_WHITESPACE)
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    return '"' + text.replace('"', "&quot;") + '"'
