"""Bytes of an XML feed -> one element tree, read once by a hardened parser.

Decoding is ours, not the parser's, because real sites get it wrong in known ways: a BOM, an
HTTP charset that contradicts the XML declaration, blank lines before the declaration,
Windows-1252 labelled ISO-8859-1 (which browsers have always read as Windows-1252). The text
is decided once here, checked for entity declarations, and the parser is told its encoding, so
that what is checked is exactly what is parsed.

lxml (libxml2) reads it: no network, no DTD, no entity resolution, libxml2's size and depth
limits (huge_tree off). A document that is not well-formed gets two more tries: first with the
HTML entities and bare ampersands that most broken feeds suffer from made into XML, then in
recover mode, which keeps what precedes a fatal error (a truncated body still gives its
entries).
"""

from __future__ import annotations

import codecs
import html.entities
import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from lxml import etree

from digest.parse.entry import ParseError
from digest.parse.urls import join_base, resolve

XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"

# --- decoding ---------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# '<?' or '<' and a name in wide encodings without a BOM (XML 1.0 appendix F).
_WIDE_STARTS = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
)
# '<?xm' in EBCDIC: the declaration, in characters every EBCDIC code page shares, names which.
_EBCDIC_START = b"\x4c\x6f\xa7\x94"
_EBCDIC_CODECS = frozenset({"cp037", "cp273", "cp424", "cp500", "cp875", "cp1026", "cp1140"})
# Labels of the IANA charset registry (and Microsoft's) that Python's codecs do not know.
_LABELS = {
    "mac": "mac_roman",
    "csmacintosh": "mac_roman",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "ms-ansi": "cp1252",
    "ms-arab": "cp1256",
    "ms-cyrl": "cp1251",
    "ms-ee": "cp1250",
    "ms-greek": "cp1253",
    "ms-hebr": "cp1255",
    "ms-turk": "cp1254",
}
_DECLARED_ENCODING = re.compile(
    rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""", re.IGNORECASE
)
# A multi-byte UTF-8 sequence: a body with such sequences and a few bad bytes is UTF-8 with a
# few bad bytes, not Windows-1252.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
# The labels that browsers (WHATWG Encoding) read as Windows-1252, a superset of each.
_AS_WINDOWS_1252 = frozenset({"latin_1", "ascii", "cp1252", "iso8859_1"})
_SERVER_DEFAULTS = _AS_WINDOWS_1252 | {"utf_8"}


def decode(body: bytes, charset: str | None) -> str:
    """The document's text, from its BOM, else its bytes (UTF-8 when they are valid UTF-8),
    else the HTTP charset, else the XML declaration, else Windows-1252.

    An HTTP charset of UTF-8 or of the Latin-1 family gives way to a declaration that names
    another encoding: those are the defaults web servers add to whatever they serve, while
    the declaration was written by the program that encoded the document.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, "replace")
    for start, name in _WIDE_STARTS:
        if body.startswith(start):
            return body.decode(name, "replace")
    if body.startswith(_EBCDIC_START):
        declared = _DECLARED_ENCODING.match(body[:200].decode("cp037").encode("ascii", "replace"))
        codec = _codec(declared[1].decode()) if declared else None
        return body.decode(codec if codec in _EBCDIC_CODECS else "cp037", "replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _DECLARED_ENCODING.match(body)
    served, written = _codec(charset), _codec(declared[1].decode() if declared else None)
    if served in _SERVER_DEFAULTS and written is not None:
        served = None
    for codec in (served, written):
        if codec is not None and codec != "utf_8":
            return body.decode("cp1252" if codec in _AS_WINDOWS_1252 else codec, "replace")
    if _UTF8_SEQUENCE.search(body):
        return body.decode("utf-8", "replace")
    return body.decode("cp1252", "replace")


def _codec(label: str | None) -> str | None:
    """Python's name of a text encoding label, or None for an unknown or non-text one."""
    if not label:
        return None
    try:
        info = codecs.lookup(_LABELS.get(label.lower(), label))
    except LookupError:
        return None
    # Bytes-to-bytes codecs (hex, zlib, ...) are no text encoding, whatever a server says.
    return info.name.replace("-", "_") if info._is_text_encoding else None


# --- entities ---------------------------------------------------------------------------------

# A PI, comment or DOCTYPE (group 1), else the start of the root element.
_PROLOG_TOKEN = re.compile(r"<(\?|!--|!doctype)|<(?:[^\W\d]|:)", re.I)
_DOCTYPE_TOKEN = re.compile(
    r"\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|<!--.*?(?:-->|\Z)|<\?.*?(?:\?>|\Z)|[\[\]>]", re.S
)


def declares_entities(text: str) -> bool:
    """Whether the document declares XML entities before its root element."""
    return "<!entity" in _prolog(text).lower()


def _prolog(text: str) -> str:
    """Everything before the root element.

    Comments, processing instructions and the DOCTYPE (with its internal subset) are skipped
    whole, so a '<a' hidden inside them cannot end the prolog early.
    """
    i = 0
    while token := _PROLOG_TOKEN.search(text, i):
        opener = token.group(1)
        if opener is None:
            return text[: token.start()]
        if opener.lower() == "!doctype":
            i = _doctype_end(text, token.end())
        else:
            closer = "?>" if opener == "?" else "-->"
            end = text.find(closer, token.end())
            i = len(text) if end < 0 else end + len(closer)
    return text


def _doctype_end(text: str, start: int) -> int:
    depth = 0
    for token in _DOCTYPE_TOKEN.finditer(text, start):
        if token.group() == "[":
            depth += 1
        elif token.group() == "]":
            depth -= 1
        elif token.group() == ">" and depth <= 0:
            return token.end()
    return len(text)


# --- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlDocument:
    root: Any  # lxml.etree._Element: lxml ships no type hints
    text: str  # the decoded document, for the feedparser fallback
    error: str | None  # why the document is not well-formed; None when it is


def read_xml(body: bytes, charset: str | None) -> XmlDocument:
    """The element tree of an XML body; ParseError if it declares entities or has no root."""
    text = decode(body, charset).lstrip("\ufeff \t\r\n")
    if declares_entities(text):
        raise ParseError("refused: the document declares XML entities")
    data = text.encode("utf-8")
    try:
        return XmlDocument(etree.fromstring(data, _parser(recover=False)), text, None)
    except etree.XMLSyntaxError as error:
        first_error = _message(error)
    repaired = _repair(text).encode("utf-8")
    if repaired != data:
        try:
            return XmlDocument(etree.fromstring(repaired, _parser(recover=False)), text, None)
        except etree.XMLSyntaxError:
            pass
    try:
        root = etree.fromstring(repaired, _parser(recover=True))
    except etree.XMLSyntaxError:
        root = None
    return XmlDocument(root, text, first_error)


def _parser(*, recover: bool) -> Any:
    # A parser per document: lxml parsers keep state and are not safe to share across threads.
    return etree.XMLParser(
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=recover,
    )


def _message(error: etree.XMLSyntaxError) -> str:
    return str(error.msg or error).strip()


# An ampersand that starts no reference, or a named reference that XML does not define
# (&nbsp;, &eacute;, ... from HTML).
_REPAIRABLE = re.compile(r"&(?!#[0-9]+;|#x[0-9a-fA-F]+;)([A-Za-z0-9]+;)?")
_XML_ENTITIES = frozenset({"amp;", "lt;", "gt;", "quot;", "apos;"})


def _repair(text: str) -> str:
    """text with its ampersands made XML, outside CDATA sections (their text is taken as
    written). The sections are found with str.find, not a regex: an unclosed one must not
    cost a scan to the end for every opener after it."""
    if "&" not in text:
        return text
    parts: list[str] = []
    i = 0
    while (start := text.find("<![CDATA[", i)) >= 0:
        end = text.find("]]>", start)
        end = len(text) if end < 0 else end + 3
        parts += (_REPAIRABLE.sub(_repair_one, text[i:start]), text[start:end])
        i = end
    parts.append(_REPAIRABLE.sub(_repair_one, text[i:]))
    return "".join(parts)


def _repair_one(match: re.Match[str]) -> str:
    name = match[1]
    if name is None:
        return "&amp;"
    if name in _XML_ENTITIES:
        return match[0]
    characters = html.entities.html5.get(name)
    if characters is None:
        return "&amp;" + name
    return "".join(f"&#{ord(c)};" for c in characters)


# --- reading elements -------------------------------------------------------------------------


def local_name(element: Any) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def namespace(element: Any) -> str | None:
    tag = element.tag
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else None


def first_children(element: Any) -> dict[str, Any]:
    """Each child element by tag, the first of each name (as feed readers read repeats)."""
    fields: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag not in fields:
            fields[tag] = child
    return fields


def base_of(element: Any, inherited: str) -> str:
    """The base URI inside element: its xml:base resolved against the one it inherits."""
    value = element.get(XML_BASE)
    if not value:
        return inherited
    try:
        return join_base(inherited, resolve(value, inherited))
    except ValueError:
        return inherited


def inner_text(element: Any) -> str:
    """All the text inside element, as written (markup in it is taken for text's sake)."""
    return "".join(element.itertext()) if len(element) else element.text or ""


def inner_markup(element: Any) -> str:
    """What is inside element as markup: its text, and its children serialized.

    For the HTML that some feeds put unescaped into a description, and for Atom's xhtml.
    """
    if not len(element):
        return element.text or ""
    parts = [element.text or ""]
    parts.extend(
        etree.tostring(_unprefixed(child), encoding=str, with_tail=True)
        for child in element
        if isinstance(child.tag, str)
    )
    return "".join(parts)


def _unprefixed(element: Any) -> Any:
    """element with its tags by local name only: XHTML written with a prefix (<xhtml:p>, as
    RFC 4287's own examples write it) must reach the HTML reader as <p>, not as an unknown
    <xhtml:p> whose paragraphs would run together."""
    if all(not isinstance(e.tag, str) or not e.tag.startswith("{") for e in element.iter()):
        return element
    copy = deepcopy(element)
    for e in copy.iter():
        if isinstance(e.tag, str):
            e.tag = local_name(e)
    etree.cleanup_namespaces(copy)
    return copy
