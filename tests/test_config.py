"""feeds.yaml: typed settings, and one clear message per problem with its line."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import ConfigError, load_config, parse_duration

GOOD = """\
site:
  title: Example Links
  base_url: https://example.org
  gemini_base_url: gemini://example.org/
  timezone: Europe/London
  output_dir: out
  database: sqlite:///state/digest.db
streams:
  links:
    title: "Links {date:%d/%m/%Y}: {headlines}"
    summary: Links for the day
    schedule: "0 12,23 * * *"
    sections: [Leftovers, Science]
  gemini-links:
    title: "Gemini Links {date:%d/%m/%Y}: {headlines}"
    summary: Links for the day
feeds:
  - {url: "https://example.net/feed/", name: Example Net, stream: links, section: Science}
  - {url: "gemini://capsule.example/gemlog/", name: A Capsule, stream: gemini-links, interval: 2h}
  - {url: "file:feeds/own.xml", name: Example, own: true, interval: 1d}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_is_typed_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    settings = config.settings
    assert settings.site.base_url == "https://example.org/"
    assert settings.site.output_dir == tmp_path.resolve() / "out"
    assert settings.site.database == f"sqlite:///{tmp_path.resolve()}/state/digest.db"
    assert list(settings.streams) == ["links", "gemini-links"]
    assert settings.streams["links"].sections == ("Leftovers", "Science")
    assert settings.streams["links"].lookback == timedelta(days=2)
    assert settings.streams["links"].display_label("links") == "Links"
    assert settings.feeds[1].interval == timedelta(hours=2)
    assert settings.feeds[2].url == (tmp_path.resolve() / "feeds/own.xml").as_uri()
    assert settings.feeds[2].own and settings.feeds[2].stream is None
    assert settings.fetch.timeout == 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "0m", "-1h", "2 hours", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    return raised.value.problems


def test_unknown_key_wrong_type_and_unknown_stream_each_get_a_line(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  timezone: Europe/London\n", "  timezone: Europe/London\n  colour: blue\n"
    )
    text = text.replace(
        "summary: Links for the day\n    schedule",
        "summary: Links for the day\n    min_items: lots\n    schedule",
    )
    text = text.replace("stream: gemini-links, interval", "stream: linx, interval")
    problems = problems_of(tmp_path, text)
    path = tmp_path / "feeds.yaml"
    assert problems == [
        f"{path}:6: site.colour: unknown key",
        f"{path}:13: streams.links.min_items: Input should be a valid integer, unable to parse "
        "string as an integer",
        f"{path}:21: feeds[1].stream: unknown stream 'linx' (known: links, gemini-links)",
    ]


def test_missing_keys_and_bad_values(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """\
        site:
          base_url: ftp://example.org/
          timezone: Mars/Olympus
        streams:
          links:
            schedule: "every day"
        feeds:
          - {url: "javascript:alert(1)", stream: links}
          - {url: "https://example.net/", name: Nowhere}
          - {url: "https://example.net/own", stream: links, own: true}
          - {url: "https://example.net/x", stream: links, interval: soon}
        """,
    )
    text = "\n".join(problems)
    assert ":1: site.title: required key is missing" in text
    assert ":2: site.base_url: expected an absolute http URL" in text
    assert ":3: site.timezone: unknown time zone 'Mars/Olympus'" in text
    assert ":6: streams.links.schedule: expected a five-field cron expression" in text
    assert ":8: feeds[0].url: expected an http, https, gemini or file URL" in text
    assert ":9: feeds[1]: needs a 'stream'" in text
    assert ":10: feeds[2]: an own feed belongs to no stream" in text
    assert ":11: feeds[3].interval: expected a duration such as 30m" in text
    assert len(problems) == 8


def test_allowed_networks_are_networks(tmp_path: Path) -> None:
    text = GOOD + "fetch:\n  allowed_networks: [192.168.1.20/32, 'fd00::/8']\n"
    networks = load_config(write(tmp_path, text)).settings.fetch.allowed_networks
    assert [str(network) for network in networks] == ["192.168.1.20/32", "fd00::/8"]

    text = GOOD + "fetch:\n  allowed_networks: [192.168.1.20/24]\n"
    line = textwrap.dedent(text).splitlines().index("  allowed_networks: [192.168.1.20/24]") + 1
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert f":{line}: fetch.allowed_networks[0]: expected a network such as" in problems[0]


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "site: [unclosed\nstreams: {}\n")
    assert len(problems) == 1 and "not valid YAML" in problems[0]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    assert problems_of(tmp_path, "- a list\n")[0].endswith(
        ":1: expected a mapping with site, streams and feeds"
    )


def test_bad_title_pattern(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        GOOD.replace(
            '{headlines}"\n    summary: Links for the day\n    schedule',
            '{headline}"\n    summary: Links for the day\n    schedule',
        ),
    )
    assert len(problems) == 1 and "streams.links.title: bad title pattern" in problems[0]


def test_a_section_name_the_draft_file_cannot_hold_is_rejected_with_its_line(
    tmp_path: Path,
) -> None:
    problems = problems_of(
        tmp_path,
        "site: {title: T, base_url: 'https://example.org/'}\n"
        "streams:\n"
        "  links:\n"
        "    sections: [Science, 'Odd [ones]', '']\n"
        '    default_section: "Two\\nlines"\n'
        "feeds:\n"
        "  - {url: 'https://a.example/feed', stream: links, section: 'x]'}\n",
    )
    path = tmp_path / "feeds.yaml"
    assert problems == [
        f"{path}:4: streams.links.sections[1]: a section name holds no ']' nor line break, "
        "got 'Odd [ones]'",
        f"{path}:4: streams.links.sections[2]: expected a section name, got ''",
        f"{path}:5: streams.links.default_section: a section name holds no ']' nor line break, "
        "got 'Two\\nlines'",
        f"{path}:7: feeds[0].section: a section name holds no ']' nor line break, got 'x]'",
    ]


def test_the_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in (root / "feeds.yaml", root / "examples/demo/feeds.yaml"):
        settings = load_config(path).settings
        assert settings.feeds and settings.streams
        assert any(feed.own for feed in settings.feeds)


# --- issue 16: mistakes that passed `digest check` or ended in a traceback ----------------


def test_a_schedule_the_daemon_cannot_follow_is_rejected_with_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD.replace('"0 12,23 * * *"', '"61 25 * * *"'))
    assert len(problems) == 1
    assert ":12: streams.links.schedule: not a valid cron schedule '61 25 * * *': " in problems[0]


def test_a_feed_listed_twice_is_rejected_naming_both_lines(tmp_path: Path) -> None:
    text = GOOD + '  - {url: "https://example.net/feed/", stream: gemini-links}\n'
    text += '  - {url: "file:./feeds/own.xml", own: true}\n'
    problems = problems_of(tmp_path, text)
    assert problems == [
        f"{tmp_path / 'feeds.yaml'}:21: feeds[3].url: the same URL as feeds[0] on line 18: "
        "list each feed once",
        f"{tmp_path / 'feeds.yaml'}:22: feeds[4].url: the same URL as feeds[2] on line 20: "
        "list each feed once",
    ]


def test_a_duplicate_key_is_rejected_naming_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace("  output_dir: out\n", "  output_dir: out\n  title: Other Links\n")
    assert problems_of(tmp_path, text) == [
        f"{tmp_path / 'feeds.yaml'}:7: site.title: duplicate key (also on line 2): keep one"
    ]
    flow = GOOD.replace("name: Example Net,", "name: Example Net, name: Again,")
    assert problems_of(tmp_path, flow)[0].endswith(
        ":18: feeds[0].name: duplicate key (also on line 18): keep one"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GOOD.encode("utf-16"), ": the file is UTF-16 (or has NUL bytes): save it as UTF-8"),
        (GOOD.encode("utf-16-le"), ": the file is UTF-16 (or has NUL bytes): save it as UTF-8"),
        (
            GOOD.replace("Example Net", "Exemple Néт")
            .encode("utf-8")
            .replace(b"\xc3\xa9", b"\xe9"),
            ":18: not UTF-8 (byte 0xe9): save the file as UTF-8",
        ),
    ],
)
def test_a_file_that_is_not_utf8_gets_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [f"{path}{expected}"]


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_bytes(GOOD.encode("utf-8-sig"))
    assert load_config(path).settings.site.title == "Example Links"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD + "fetch:\n  allowed_networks: &loop [*loop]\n")
    assert len(problems) == 1
    assert (
        ":22: fetch.allowed_networks[0]: an alias refers to a value that contains it"
        in (problems[0])
    )


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)]
    text = GOOD + "x-bomb:\n" + "".join(f"  {level}\n" for level in levels)
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert "aliases expand the file past 100,000 values (an alias bomb?)" in problems[0]


def test_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = GOOD.replace(
        "feeds:\n",
        "feeds:\n"
        "  - &net {url: 'https://example.net/a', stream: links, interval: 2h}\n"
        "  - {<<: *net, url: 'https://example.net/b'}\n",
    )
    feeds = load_config(write(tmp_path, text)).settings.feeds
    assert [(feed.url, feed.interval) for feed in feeds[:2]] == [
        ("https://example.net/a", timedelta(hours=2)),
        ("https://example.net/b", timedelta(hours=2)),
    ]
