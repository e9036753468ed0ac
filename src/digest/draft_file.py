"""The draft as a text file an editor edits (`digest draft --edit`), in the manner of
`git rebase -i`: one line per item, a verb, the handle, the section in brackets and the
headline; the title on its own line; comments explain the verbs.

Pure: text in, choices out. Every line is checked before anything is applied, so a file with
a wrong line changes nothing, and the message names each wrong line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from digest.handles import entry_id_of, handle_of
from digest.rules import BLOCKED

if TYPE_CHECKING:
    from digest.desk import Draft

KEEP, PIN, HIDE, SKIP = "keep", "pin", "hide", "skip"
VERBS = (KEEP, PIN, HIDE, SKIP)
_LINE = re.compile(r"^(\S+)\s+(\S+)\s+\[([^\]]*)\]")
_KEY = re.compile(r"^(title|headlines)\s*:(.*)$", re.IGNORECASE)

HELP = """\
# Each item is a line: VERB HANDLE [SECTION] source ☛ headline. Change a verb or a section,
# save and quit: every change is applied at once.
#   keep  it goes in (the usual; a changed section moves it, as pin --section does)
#   pin   it goes in whatever its age or the exclude/include rules (blocked domains excepted)
#   hide  it stays out, of this edition and of every later one
#   skip  (a held-back line) it stays out as the rules or repeats decide; pin lets it in
# Verbs may be shortened to their first letter. A deleted line changes nothing about its
# item; an emptied file changes nothing at all.
#
# title: the {headlines} part of the title, verbatim (the pattern and the date still apply,
#        title_max does not cut it); empty: made from the headlines
# headlines: handles of the items whose headlines make the title, in that order; empty:
#        the most prominent items
"""


@dataclass(frozen=True)
class Edits:
    """Every choice of an edited draft file, applied at once (digest.desk.apply_edits)."""

    hide: frozenset[int] = frozenset()
    clear: frozenset[int] = frozenset()  # neither hidden nor pinned
    pin: dict[int, str | None] = field(default_factory=dict)  # entry id -> section
    headlines: tuple[int, ...] | None = None  # None: unchanged
    title: str | None = None  # the {headlines} part; "" made from headlines; None: unchanged


class DraftFileError(Exception):
    """The edited file cannot be applied; `problems` names each wrong line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class EmptyDraftFile(Exception):
    """The editor emptied the file: the editor's way to change nothing."""


def render_draft_file(draft: Draft) -> str:
    """The text an editor edits."""
    state = (
        f"It would close now with {len(draft.items)} items."
        if draft.closes
        else f"It would not close now: {len(draft.items)} items, min_items {draft.min_items}."
    )
    lines = [f"# Draft of {draft.stream}: {draft.title}", f"# {state}", "#", HELP.rstrip("\n")]
    lines.append(f"title: {draft.title_choice or ''}".rstrip())
    lines.append("headlines: " + " ".join(draft.headlines))
    lines[-1] = lines[-1].rstrip()
    section = None
    for item in draft.items:
        if item.section != section:
            section = item.section
            lines += ["", f"# {section}"]
        verb = PIN if item.pinned else KEEP
        lines.append(_item_line(verb, item.handle, item.section, item.feed, item.title))
    if draft.held_back:
        lines += ["", "# Held back (the reason follows each line)"]
    for held in draft.held_back:
        # A pin that waits (the story's other teller went in) is kept by saving the file as
        # it was; a blocked domain's pin is no use, and skip lets it go.
        kept = held.pinned and not held.reason.startswith(BLOCKED + " ")
        verb = HIDE if held.hidden else PIN if kept else SKIP
        line = _item_line(verb, held.handle, held.section, held.feed, held.title)
        lines.append(f"{line}   # {held.reason}")
    return "\n".join(lines) + "\n"


def parse_draft_file(text: str, draft: Draft) -> Edits:
    """The choices of an edited draft file; DraftFileError naming every wrong line,
    EmptyDraftFile when nothing but comments is left."""
    shown = {item.handle: item.section for item in draft.items}
    shown |= {held.handle: held.section for held in draft.held_back}
    rule_held = {held.handle for held in draft.held_back if not held.hidden}
    blocked = {
        held.handle: held.reason
        for held in draft.held_back
        if held.reason.startswith(BLOCKED + " ")
    }
    problems: list[str] = []
    hide: set[int] = set()
    clear: set[int] = set()
    pin: dict[int, str | None] = {}
    seen: dict[str, int] = {}
    keys: dict[str, tuple[int, str]] = {}
    lines = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lines += 1
        where = f"draft line {number}"
        if key := _KEY.match(line):
            name = key[1].lower()
            if name in keys:
                problems.append(
                    f"{where}: a second {name}: line (the first is line {keys[name][0]})"
                )
            keys[name] = (number, key[2].strip())
            continue
        match = _LINE.match(line)
        if match is None:
            problems.append(
                f"{where}: expected VERB HANDLE [SECTION] …, title: or headlines:, "
                f"got {_cut(line)!r}"
            )
            continue
        verb_text, handle_text, section = match[1].lower(), match[2], match[3].strip()
        verb = _verb(verb_text)
        entry_id = entry_id_of(handle_text)
        handle = handle_text.lower() if entry_id is None else handle_of(entry_id)
        if verb is None:
            problems.append(f"{where}: unknown verb {match[1]!r} (keep, pin, hide or skip)")
            continue
        if entry_id is None or handle not in shown:
            problems.append(f"{where}: {handle_text!r} is not a handle of this draft")
            continue
        if handle in seen:
            problems.append(f"{where}: {handle} is listed twice (also on line {seen[handle]})")
            continue
        seen[handle] = number
        if section not in draft.sections:
            problems.append(
                f"{where}: no section {section!r} in stream {draft.stream} "
                f"(known: {', '.join(draft.sections)})"
            )
            continue
        if verb == KEEP and handle in rule_held:
            problems.append(
                f"{where}: {handle} is held back by a rule or as a repeat: pin it to let it in"
            )
        elif verb == SKIP and handle not in rule_held:
            problems.append(f"{where}: skip is for held-back lines: hide {handle} to keep it out")
        elif verb == HIDE:
            hide.add(entry_id)
        elif verb != SKIP and handle in blocked and (verb == PIN or section != shown[handle]):
            problems.append(
                f"{where}: {handle}: {blocked[handle]} (block_domains): "
                "its links never enter an edition"
            )
        elif verb != SKIP and (verb == PIN or section != shown[handle]):
            pin[entry_id] = section
        else:
            clear.add(entry_id)
    if lines == 0:
        raise EmptyDraftFile()
    headlines = None
    if "headlines" in keys:
        number, value = keys["headlines"]
        out = hide | {
            entry_id
            for held in draft.held_back
            if (entry_id := entry_id_of(held.handle)) is not None
            and entry_id not in pin
            and (not held.hidden or entry_id not in clear)
        }
        headlines = _headlines(value, number, shown, out, problems)
    if problems:
        raise DraftFileError(problems)
    return Edits(
        hide=frozenset(hide),
        clear=frozenset(clear),
        pin=pin,
        headlines=headlines,
        title=" ".join(keys["title"][1].split()) if "title" in keys else None,
    )


def _headlines(
    value: str,
    number: int,
    shown: dict[str, str],
    out: set[int],
    problems: list[str],
) -> tuple[int, ...]:
    """The handles of a headlines: line; each must name an item that goes in."""
    chosen: list[int] = []
    for text in value.replace(",", " ").split():
        entry_id = entry_id_of(text)
        handle = text.lower() if entry_id is None else handle_of(entry_id)
        if entry_id is None or handle not in shown:
            problems.append(
                f"draft line {number}: headlines: {text!r} is not a handle of this draft"
            )
        elif entry_id in out:
            problems.append(f"draft line {number}: headlines: {handle} stays out of the edition")
        elif entry_id not in chosen:
            chosen.append(entry_id)
    return tuple(chosen)


def _verb(text: str) -> str | None:
    for verb in VERBS:
        if text in (verb, verb[0]):
            return verb
    return None


def _item_line(verb: str, handle: str, section: str, feed: str, title: str) -> str:
    return f"{verb} {handle} [{section}] {' '.join(feed.split())} ☛ {' '.join(title.split())}"


def _cut(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
