"""feeds.yaml read once, with the line of every key, for messages a user can act on.

A ConfigError holds one line per problem: the file, the line, the key path and what to do.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
# First characters of the plain scalars the safe resolver may read as other than a string.
_NOT_PLAIN_TEXT = frozenset(_BASE_LOADER.yaml_implicit_resolvers)


class _Loader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader on libyaml's parser where PyYAML was built with it (20,000 feeds parse
    ten times faster), with a shortcut for the scalars that can only be strings: the
    resolver's regular expressions were half of the remaining time."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and not (implicit[0] and value[:1] in _NOT_PLAIN_TEXT):
            return _STR_TAG
        tag: str = super().resolve(kind, value, implicit)
        return tag


assert None not in _NOT_PLAIN_TEXT and not _BASE_LOADER.yaml_path_resolvers
_LOADER = _Loader
# How many nodes aliases may add to the document (each use of an alias repeats its anchor's
# nodes): far beyond any config, far below what a "billion laughs" file expands to.
MAX_ALIAS_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigDocument:
    """feeds.yaml read once: the data, the line of each key path, and the problems found
    while building it (duplicate keys, unknown tags).

    The data is built straight from the parser's events rather than by PyYAML's composer and
    constructor: the file is parsed once and no node tree is made (most of the time at 20,000
    feeds), duplicate keys are seen, and aliases are counted. An alias's value is built once
    and shared; what it would add to the document expanded is counted against
    MAX_ALIAS_NODES, and an alias inside its own anchor's value is refused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        self.problems: list[tuple[int, tuple[Any, ...], str]] = []
        self._scalars = yaml.constructor.SafeConstructor()
        self._anchors: dict[str, tuple[Any, int]] = {}  # value, size expanded
        self._stack: list[_Collection] = []
        self._count = 0  # values built (each once)
        self._alias_nodes = 0  # nodes the aliases met so far add to the document, expanded
        self._root: Any = None
        self._loader: Any = None

    def load(self) -> Any:
        loader = self._loader = _LOADER(_read_text(self.path))
        try:
            documents = 0
            while (event := loader.get_event()) is not None:
                if isinstance(event, yaml.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        raise self._fail(event, (), "expected one YAML document, found more")
                elif isinstance(event, yaml.StreamEndEvent):
                    break
                else:
                    self._on(event)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{self.path}:{mark.line + 1}" if mark else str(self.path)
            raise ConfigError(
                [f"{where}: not valid YAML: {getattr(error, 'problem', error)}"]
            ) from None
        finally:
            loader.dispose()
        return self._root

    def _fail(self, event: yaml.Event, loc: tuple[Any, ...], message: str) -> ConfigError:
        where = f"{self.path}:{_line(event)}"
        return ConfigError([f"{where}: {dotted(loc) or '(top)'}: {message}"])

    def _on(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent):
            self._count += 1
            value = self._scalar(event)
            self._add(value, event, 1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self._anchors:
                building = any(frame.anchor == event.anchor for frame in self._stack)
                raise self._fail(
                    event,
                    self._next_loc(),
                    "an alias refers to a value that contains it: remove the loop"
                    if building
                    else f"unknown alias *{event.anchor}",
                )
            value, size = self._anchors[event.anchor]
            self._alias_nodes += size
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise self._fail(
                    event,
                    self._next_loc(),
                    f"aliases expand the file past {MAX_ALIAS_NODES:,} values (an alias bomb?):"
                    " write the values out or use fewer aliases",
                )
            self._add(value, event, size)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            default = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            loc = self._next_loc()
            if event.tag not in (None, "!", f"tag:yaml.org,2002:{default}"):
                raise self._fail(event, loc, f"YAML tag {event.tag} is not supported here")
            self._stack.append(
                _Collection(
                    [] if default == "seq" else {},
                    loc,
                    event,
                    event.anchor,
                    self._count,
                    self._alias_nodes,
                )
            )
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            frame = self._stack.pop()
            if isinstance(frame.value, dict):
                for extra in frame.merged:  # keys written out win, then earlier merges
                    for key, value in extra.items():
                        frame.value.setdefault(key, value)
            self._count += 1
            size = self._count - frame.count + self._alias_nodes - frame.aliases
            self._add(frame.value, frame.start, size, anchor=frame.anchor)

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            return event.value
        if tag == _MERGE_TAG:
            return _MERGE_KEY
        construct = self._scalars.yaml_constructors.get(tag)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)  # type: ignore[arg-type]
        try:
            if construct is None:
                raise ValueError(f"YAML tag {tag} is not supported here")
            return construct(self._scalars, node)
        except (ValueError, yaml.YAMLError) as error:
            message = getattr(error, "problem", None) or str(error)
            self.problems.append((_line(event), self._next_loc(), message))
            return None

    def _next_loc(self) -> tuple[Any, ...]:
        """The key path of the value that comes next."""
        if not self._stack:
            return ()
        frame = self._stack[-1]
        if isinstance(frame.value, list):
            return (*frame.loc, len(frame.value))
        if frame.key is _NO_KEY or frame.key is _MERGE:
            return frame.loc
        return (*frame.loc, frame.key)

    def _add(
        self,
        value: Any,
        event: yaml.Event,
        size: int,
        anchor: str | None = None,
    ) -> None:
        """Put a finished value in its collection (or make it the document)."""
        merge = value is _MERGE_KEY
        if merge and (not self._stack or self._stack[-1].key is not _NO_KEY):
            value = "<<"  # `<<` written as a value, not a key: a string
        anchor = anchor if anchor is not None else getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            self._anchors[anchor] = (value, size)
        line = _line(event)
        if not self._stack:
            self._root = value
            return
        frame = self._stack[-1]
        if isinstance(frame.value, list):
            self.lines.setdefault((*frame.loc, len(frame.value)), line)
            frame.value.append(value)
            return
        if frame.key is _MERGE:
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in merged):
                raise self._fail(event, frame.loc, "'<<' merges a mapping or a list of mappings")
            frame.merged += merged
            frame.key = _NO_KEY
            return
        if frame.key is not _NO_KEY:
            frame.value[frame.key] = value
            frame.key = _NO_KEY
            return
        if merge and isinstance(frame.value, dict):
            frame.key = _MERGE
            return
        path = (*frame.loc, value)
        try:
            first = frame.first_lines.get(value)
        except TypeError:
            raise self._fail(event, frame.loc, "a key must be a plain value") from None
        if first is not None:
            self.problems.append((line, path, f"duplicate key (also on line {first}): keep one"))
        frame.first_lines[value] = line
        self.lines.setdefault(path, line)
        frame.key = value


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 1


_MERGE_KEY: Any = object()  # the `<<` key, while it is read
_NO_KEY: Any = object()  # a mapping waiting for its next key
_MERGE: Any = object()  # a mapping waiting for the value of its `<<` key


@dataclass
class _Collection:
    """A sequence or mapping being built from the events between its start and its end."""

    value: Any  # the list or dict
    loc: tuple[Any, ...]
    start: yaml.Event
    anchor: str | None
    count: int  # values built before it began
    aliases: int  # alias nodes counted before it began
    key: Any = _NO_KEY
    merged: list[dict[Any, Any]] = field(default_factory=list)
    first_lines: dict[Any, int] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM allowed); anything else is named, with what to do."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise ConfigError([f"{path}: the file is UTF-16 (or has NUL bytes): save it as UTF-8"])
    # The BOM by hand, not the utf-8-sig codec: a codec is a module imported on first use, and
    # a run may have dropped privileges to a user who cannot read the standard library.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            [f"{path}:{line}: not UTF-8 (byte 0x{data[error.start]:02x}): save the file as UTF-8"]
        ) from None
