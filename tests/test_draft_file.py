"""The edited draft file, without a database: what each line means, and every wrong line
named."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from digest.desk import Draft, DraftItem, HeldItem
from digest.draft_file import (
    DraftFileError,
    Edits,
    EmptyDraftFile,
    parse_draft_file,
    render_draft_file,
)
from digest.handles import handle_of

T = datetime(2026, 12, 3, 9, tzinfo=UTC)
A, B, C, D, E = (handle_of(n) for n in (10, 11, 12, 13, 14))


def item(handle: str, section: str, title: str, **marks: bool) -> DraftItem:
    return DraftItem(handle, "Feed", section, title, None, "", T, **marks)


DRAFT = Draft(
    stream="links",
    title="Links 03/12/2026: One and Two",
    closes=True,
    min_items=1,
    items=(
        item(A, "Science", "One"),
        item(B, "Science", "Two", headline=True),
        item(C, "Security", "Three", pinned=True),
    ),
    held_back=(
        HeldItem(
            D, "Feed", "Science", "Sponsored", None, "excluded by the stream's rule 'x'", False
        ),
        HeldItem(E, "Feed", "Science", "Slop", None, "hidden by the editor", True),
    ),
    title_choice="My words",
    sections=("Leftovers", "Science", "Security"),
    headlines=(B,),
)


def test_the_file_lists_every_item_and_reads_back_as_no_change() -> None:
    text = render_draft_file(DRAFT)
    assert "title: My words\n" in text and f"headlines: {B}\n" in text
    assert f"keep {A} [Science] Feed ☛ One\n" in text
    assert f"pin {C} [Security] Feed ☛ Three\n" in text
    assert f"skip {D} [Science] Feed ☛ Sponsored   # excluded by the stream's rule 'x'\n" in text
    assert f"hide {E} [Science] Feed ☛ Slop   # hidden by the editor\n" in text
    assert parse_draft_file(text, DRAFT) == Edits(
        hide=frozenset({14}),
        clear=frozenset({10, 11, 13}),  # skip: no choice of the editor's
        pin={12: "Security"},
        headlines=(11,),
        title="My words",
    )


def test_verbs_sections_title_and_headlines() -> None:
    text = (
        f"k {A} [Security] moved, so pinned there\n"
        f"HIDE {B} [Science]\n"
        f"keep {C} [Security]\n"
        f"pin {D} [Science]\n"
        f"keep {E.upper()} [Science]\n"
        f"headlines: {D}, {A}\n"
        "title:\n"
    )
    assert parse_draft_file(text, DRAFT) == Edits(
        hide=frozenset({11}),
        clear=frozenset({12, 14}),
        pin={10: "Security", 13: "Science"},
        headlines=(13, 10),
        title="",
    )


def test_deleted_lines_change_nothing_about_their_items() -> None:
    assert parse_draft_file(f"hide {A} [Science]\n", DRAFT) == Edits(hide=frozenset({10}))


def test_every_wrong_line_is_named() -> None:
    text = (
        "# a comment\n"
        f"keep {A} [Gossip]\n"
        f"keep {A} [Science]\n"
        f"keep {A} [Science]\n"
        f"keep {D} [Science]\n"
        f"skip {B} [Science]\n"
        f"drop {C} [Security]\n"
        "just words\n"
        "title: one\n"
        "title: two\n"
        f"headlines: {E} nope\n"
    )
    with pytest.raises(DraftFileError) as error:
        parse_draft_file(text, DRAFT)
    assert error.value.problems == [
        "draft line 2: no section 'Gossip' in stream links (known: Leftovers, Science, Security)",
        f"draft line 3: {A} is listed twice (also on line 2)",
        f"draft line 4: {A} is listed twice (also on line 2)",
        f"draft line 5: {D} is held back by a rule or as a repeat: pin it to let it in",
        f"draft line 6: skip is for held-back lines: hide {B} to keep it out",
        "draft line 7: unknown verb 'drop' (keep, pin, hide or skip)",
        "draft line 8: expected VERB HANDLE [SECTION] …, title: or headlines:, got 'just words'",
        "draft line 10: a second title: line (the first is line 9)",
        f"draft line 11: headlines: {E} stays out of the edition",
        "draft line 11: headlines: 'nope' is not a handle of this draft",
    ]


def test_a_file_of_comments_only_is_empty() -> None:
    for text in ("", "\n\n", "# title: x\n#keep\n   \n"):
        with pytest.raises(EmptyDraftFile):
            parse_draft_file(text, DRAFT)


def test_a_skipped_line_stays_out_whatever_its_section() -> None:
    # skip means "it stays out as the rules decide": a moved section must not pin it in
    edits = parse_draft_file(f"skip {D} [Security]\n", DRAFT)
    assert edits.pin == {}
    assert edits == Edits(clear=frozenset({13}))


def test_handles_typed_in_the_file_forgive_look_alikes_as_on_the_command_line() -> None:
    # 0 typed as o, 1 as l: `digest hide` takes them, and so does the file
    typed = A.replace("0", "O")
    assert typed != A
    assert parse_draft_file(f"headlines: {typed}\n", DRAFT).headlines == (10,)
    assert parse_draft_file(f"hide {typed} [Science]\n", DRAFT) == Edits(hide=frozenset({10}))


def test_a_blocked_domain_cannot_be_pinned_in_the_file_either() -> None:
    # as `digest pin` refuses it: the block_domains list is absolute
    slop = handle_of(15)
    draft = replace(
        DRAFT,
        held_back=(
            *DRAFT.held_back,
            HeldItem(slop, "Feed", "Science", "Farm", None, "blocked domain slop.example", False),
        ),
    )
    with pytest.raises(DraftFileError) as error:
        parse_draft_file(f"pin {slop} [Science]\nheadlines: {slop}\n", draft)
    assert error.value.problems == [
        f"draft line 1: {slop}: blocked domain slop.example (block_domains): "
        "its links never enter an edition",
        f"draft line 2: headlines: {slop} stays out of the edition",
    ]


def test_a_pinned_entry_held_back_as_a_repeat_keeps_its_pin_when_saved_as_it_was() -> None:
    # Two tellers of one story both pinned: one goes in, the other waits with its pin
    twin = handle_of(16)
    draft = replace(
        DRAFT,
        held_back=(
            *DRAFT.held_back,
            HeldItem(twin, "Feed", "Security", "Twin", None, f"the same story as {C}", False, True),
        ),
    )
    text = render_draft_file(draft)
    assert f"pin {twin} [Security] Feed ☛ Twin   # the same story as {C}\n" in text
    assert parse_draft_file(text, draft).pin == {12: "Security", 16: "Security"}
