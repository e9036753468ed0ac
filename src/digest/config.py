"""Config stage: read feeds.yaml into typed, validated settings.

Every problem is reported at once, each with the file, the line and the key path, so a user
fixes a broken config in one pass. Nothing here touches the database or the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.config_file import ConfigDocument, dotted
from digest.config_file import ConfigError as ConfigError  # what load_config raises
from digest.patterns import compile_rule

FEED_SCHEMES = ("http", "https", "gemini", "file")
SMTP_PORTS = {"none": 25, "starttls": 587, "tls": 465}  # each security's usual port
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds (site.busy_timeout)
# site.index_editions, site.feed_editions, site.feed_content_kb: the views default to them too.
INDEX_EDITIONS = 60
FEED_EDITIONS = 20
FEED_CONTENT_KB = 150
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """`30m`, `2h`, `1d` (or a number of seconds) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds > 0:
            return timedelta(seconds=seconds)
    raise ValueError(f"expected a duration such as 30m, 2h or 1d, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _pattern(value: object) -> str:
    """A rule's regular expression, compiled here as the editions stage will (case-insensitive),
    so a bad one is a config error with its line rather than a failed closing."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a regular expression, got {value!r}")
    try:
        compile_rule(value)
    except ValueError as error:
        raise ValueError(f"not a valid regular expression {value!r}: {error}") from None
    return value


Pattern = Annotated[str, BeforeValidator(_pattern)]


def _section(value: object) -> str:
    """A section's name: one line without ']', as the draft file (digest.draft_file) writes it
    between brackets for the editor to change."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a section name, got {value!r}")
    if "]" in value or "\n" in value or "\r" in value:
        raise ValueError(f"a section name holds no ']' nor line break, got {value!r}")
    return value


Section = Annotated[str, BeforeValidator(_section)]
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")


def ascii_host(host: str) -> str:
    """A host name as DNS spells it: an internationalised one (bücher.example, or with an
    ideographic full stop) in its ASCII form (xn--bcher-kva.example), lower case."""
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host.lower()


def _domain(value: object) -> str:
    """A blocked domain as links' host names are compared with it: lower-case, no dot before;
    `*.slop.example` means the same as `slop.example` (subdomains are always included)."""
    text = value.strip().lower().removeprefix("*.").strip(".") if isinstance(value, str) else ""
    text = ascii_host(text).strip(".")
    if not _DOMAIN.match(text):
        raise ValueError(f"expected a domain such as slop.example, got {value!r}")
    return text


Domain = Annotated[str, BeforeValidator(_domain)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSettings(_Strict):
    title: str
    base_url: str
    gemini_base_url: str = ""
    timezone: str = "UTC"
    output_dir: Path = Path("public")
    database: str = "sqlite:///digest.db"
    state_dir: Path = Path(".digest")  # lock files, the Gemini certificate
    templates: Path | None = None
    author: str = ""
    recent_count: int = Field(default=50, ge=1, le=1000)
    # Seconds SQLite waits for a database another program holds, then says so.
    busy_timeout: float = Field(default=DEFAULT_BUSY_TIMEOUT, gt=0)
    # Seconds a run waits for another's closing and rendering (the publish lock), then skips.
    lock_wait: float = Field(default=60.0, ge=0)
    # Editions a stream's index lists (about a month at two a day); older ones are reached
    # through the month and year archive pages, so no index grows with the site's age.
    index_editions: int = Field(default=INDEX_EDITIONS, ge=1, le=10_000)
    # Editions a stream's feed.xml lists; the newest go in full while the feed stays under
    # feed_content_kb, the rest with title and summary only, so a reader's fetch stays small.
    feed_editions: int = Field(default=FEED_EDITIONS, ge=1, le=1000)
    feed_content_kb: int = Field(default=FEED_CONTENT_KB, ge=1)
    # WebSub hubs told when a published Atom feed changes (digest.websub).
    websub_hubs: tuple[str, ...] = ()

    @field_validator("websub_hubs")
    @classmethod
    def _hub_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for hub in value:
            parts = urlsplit(hub)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"expected an http or https URL of a WebSub hub, got {hub!r}")
        return value

    @field_validator("base_url", "gemini_base_url")
    @classmethod
    def _slash_terminated(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        scheme = "gemini" if info.field_name == "gemini_base_url" else "http"
        if not urlsplit(value).scheme.startswith(scheme) or not urlsplit(value).netloc:
            raise ValueError(f"expected an absolute {scheme} URL, got {value!r}")
        return value if value.endswith("/") else value + "/"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class StreamSettings(_Strict):
    title: str = "{date:%d/%m/%Y}: {headlines}"
    summary: str = ""
    schedule: str = "0 23 * * *"
    sections: tuple[Section, ...] = ()
    default_section: Section = "Leftovers"
    lookback: Duration = timedelta(days=2)
    min_items: int = Field(default=1, ge=1)
    title_max: int = Field(default=110, ge=20)
    label: str = ""  # what index pages call the stream; default: the title pattern's first words
    # Rules (digest.rules), applied when an edition closes, never when entries are stored.
    exclude: tuple[Pattern, ...] = ()
    include: tuple[Pattern, ...] = ()
    mail_to: tuple[str, ...] = ()  # each closed edition is mailed to these (digest.mail)

    @field_validator("mail_to")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for address in value:
            bare = mail_address(address).casefold()
            if bare in seen:
                raise ValueError(f"{address!r} is listed twice: list each address once")
            seen.add(bare)
        return value

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        """Parsed as the daemon will (digest.clock.close_trigger), so a schedule it cannot
        follow is a config error here, not a crash on start or reload."""
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError(f"expected a five-field cron expression, got {value!r}")
        try:
            CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as error:
            raise ValueError(f"not a valid cron schedule {value!r}: {error}") from None
        return value

    @field_validator("title")
    @classmethod
    def _pattern_formats(cls, value: str) -> str:
        from datetime import date

        try:
            value.format(date=date(2000, 1, 2), headlines="A")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"bad title pattern {value!r}: {error}") from None
        return value

    def display_label(self, name: str) -> str:
        return self.label or self.title.split("{", 1)[0].strip() or name


class FeedSettings(_Strict):
    url: str
    name: str = ""
    stream: str | None = None
    section: Section | None = None
    own: bool = False
    interval: Duration = timedelta(hours=1)
    weight: int = 0
    exclude: tuple[Pattern, ...] = ()  # rules for this feed's entries (digest.rules)
    include: tuple[Pattern, ...] = ()

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in FEED_SCHEMES:
            raise ValueError(f"expected an http, https, gemini or file URL, got {value!r}")
        if parts.scheme != "file" and not parts.netloc:
            raise ValueError(f"URL has no host: {value!r}")
        return value

    @model_validator(mode="after")
    def _own_or_stream(self) -> FeedSettings:
        if self.own and self.stream:
            raise ValueError("an own feed belongs to no stream: drop 'stream' or 'own'")
        if not self.own and not self.stream:
            raise ValueError("needs a 'stream' (or 'own: true')")
        return self

    @property
    def display_name(self) -> str:
        """The name, else the host (never the user and password a URL may carry)."""
        return self.name or urlsplit(self.url).netloc.rpartition("@")[2] or self.url


def _network(value: object) -> IPv4Network | IPv6Network:
    try:
        return ip_network(str(value))  # strict: "192.168.1.20/24" is a typo, not a network
    except ValueError as error:
        raise ValueError(f"expected a network such as 192.168.1.0/24 ({error})") from None


Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


class FetchSettings(_Strict):
    timeout: float = Field(default=30.0, gt=0)
    parse_timeout: float = Field(default=30.0, gt=0)  # per trip to a parser process
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    allow_private_networks: bool = False
    user_agent: str = ""
    concurrency: int = Field(default=50, ge=1, le=1000)
    per_host: int = Field(default=2, ge=1, le=100)
    # Networks reachable even when allow_private_networks is false, e.g. the one LAN host that
    # serves a feed, without opening every private address to redirects (the SSRF guard).
    allowed_networks: tuple[Network, ...] = ()


class RetentionSettings(_Strict):
    # Entries that never went into an edition are deleted once this old (None: kept forever);
    # what an edition shows is kept as long as the edition.
    unpublished: Duration | None = timedelta(days=90)
    # Editions closed longer ago than this are packed (digest.store.packed): their items
    # compressed into the edition, their entries retired to a fingerprint (None: never).
    published: Duration | None = timedelta(days=30)


def mail_address(value: str) -> str:
    """The bare address of `value` ("Name <a@b.example>" or "a@b.example"); ValueError when
    it is not one address, or when it would break a header (a line break)."""
    from email.utils import getaddresses, parseaddr  # here: `digest check` starts without email

    if any(char in value for char in "\r\n"):
        raise ValueError(f"a mail address has no line breaks: {value!r}")
    if len([address for _name, address in getaddresses([value]) if address]) > 1:
        # parseaddr would take the first; the To: header, and so smtplib, would take them all.
        raise ValueError(f"expected one mail address, got several in {value!r}: list each alone")
    _name, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or " " in address:
        raise ValueError(f"expected a mail address such as links@example.org, got {value!r}")
    return address


def _on_this_machine(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1): traffic that never leaves."""
    if host.lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SmtpSettings(_Strict):
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # None: the security's usual port
    security: Literal["none", "starttls", "tls"] = "starttls"
    user: str = ""
    # The password is read from this environment variable only, never from the file.
    password_env: str = ""
    timeout: float = Field(default=30.0, gt=0)  # seconds for each SMTP step

    @model_validator(mode="before")
    @classmethod
    def _no_password_in_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "the password is never read from the file: put it in an environment variable "
                "and name that variable in password_env"
            )
        return data

    @model_validator(mode="after")
    def _user_and_password(self) -> SmtpSettings:
        if bool(self.user) != bool(self.password_env):
            raise ValueError("user and password_env go together (a login needs both)")
        # Over a network, `security: none` would send the password as it is; a relay on this
        # machine never puts it on the wire.
        if self.user and self.security == "none" and not _on_this_machine(self.host):
            raise ValueError(
                f"a login to {self.host} with security: none sends the password in clear: "
                "use starttls or tls"
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or SMTP_PORTS[self.security]


class MailSettings(_Strict):
    smtp: SmtpSettings
    sender: str = Field(alias="from")
    # Where a reader unsubscribes (a mailto: or https: URL); default: a mail to the sender.
    list_unsubscribe: str = ""

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        mail_address(value)
        return value

    @field_validator("list_unsubscribe")
    @classmethod
    def _unsubscribe(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("mailto", "https", "http"):
            raise ValueError(f"expected a mailto: or https: URL, got {value!r}")
        return value


class Settings(_Strict):
    site: SiteSettings
    streams: dict[str, StreamSettings]
    feeds: tuple[FeedSettings, ...] = ()
    fetch: FetchSettings = FetchSettings()
    # Domains (and their subdomains) whose links never enter an edition, whichever feed
    # carries them.
    block_domains: tuple[Domain, ...] = ()
    retention: RetentionSettings = RetentionSettings()
    mail: MailSettings | None = None

    @field_validator("streams")
    @classmethod
    def _stream_names(cls, value: dict[str, StreamSettings]) -> dict[str, StreamSettings]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"stream name {name!r} must be lower-case letters, digits, - or _")
        return value


@dataclass(frozen=True)
class Timings:
    """Periods an operator has no reason to change and tests must shorten.

    Tests construct one; for the `digest` processes they start, `from_environment` reads the
    DIGEST_TEST_* variables, once, in the CLI.
    """

    # Close every stream on this interval instead of its schedule.
    close_every: timedelta | None = None
    # A poller's hold on the feeds it claimed (None: long enough for fetch.timeout), and a
    # mail sender's on the message it sends (None: long enough for mail.smtp.timeout).
    lease: timedelta | None = None
    # How often a standby node asks for the publisher role.
    leader_check: timedelta = timedelta(seconds=5)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Timings:
        """The test hooks: DIGEST_TEST_CLOSE_EVERY, DIGEST_TEST_LEASE, DIGEST_TEST_LEADER_CHECK
        (durations such as `2s`). Raises ConfigError naming each bad one."""
        values: dict[str, timedelta] = {}
        problems = []
        for field_name, variable in _TIMING_VARIABLES.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            try:
                values[field_name] = parse_duration(text)
            except ValueError as error:
                problems.append(f"environment variable {variable}={text!r}: {error}")
        if problems:
            raise ConfigError(problems)
        return cls(**values)


_TIMING_VARIABLES = {
    "close_every": "DIGEST_TEST_CLOSE_EVERY",
    "lease": "DIGEST_TEST_LEASE",
    "leader_check": "DIGEST_TEST_LEADER_CHECK",
}


@dataclass(frozen=True)
class Config:
    """Validated settings plus where they came from (for messages and relative paths)."""

    path: Path
    settings: Settings
    timings: Timings = Timings()

    @property
    def database_url(self) -> str:
        return self.settings.site.database


def load_config(path: Path, timings: Timings = Timings()) -> Config:
    """Read and validate `path`; raise ConfigError listing every problem with its line."""
    document = ConfigDocument(path)
    data = document.load()
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: expected a mapping with site, streams and feeds"])
    lines = document.lines
    problems = document.problems
    problems += [(_line_of(loc, lines), loc, message) for loc, message in _unknown_streams(data)]
    problems += [(_line_of(loc, lines), loc, message) for loc, message in _mail_unset(data)]
    problems += _duplicate_feeds(data, lines, path.parent.resolve())
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        problems += _describe(error, lines)
    except RecursionError:
        problems.append((1, (), "nested too deeply to read"))
    if problems:
        problems.sort(key=lambda problem: problem[0])
        raise ConfigError(
            [
                f"{path}:{line}: {dotted(loc) or '(top)'}: {message}"
                for line, loc, message in problems
            ]
        )
    return Config(
        path=path, settings=_resolve_paths(settings, path.parent.resolve()), timings=timings
    )


def _duplicate_feeds(
    data: dict[str, Any], lines: dict[tuple[Any, ...], int], base: Path
) -> list[tuple[int, tuple[Any, ...], str]]:
    """Feeds listed twice: the database keeps one row per URL (file: URLs compared as the
    files they name)."""
    feeds = data.get("feeds")
    if not isinstance(feeds, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, feed in enumerate(feeds):
        url = feed.get("url") if isinstance(feed, dict) else None
        if not isinstance(url, str):
            continue
        seen = first.setdefault(_resolve_file_url(url, base), index)
        if seen != index:
            loc = ("feeds", index, "url")
            problems.append(
                (
                    _line_of(loc, lines),
                    loc,
                    f"the same URL as feeds[{seen}] on line "
                    f"{_line_of(('feeds', seen, 'url'), lines)}: list each feed once",
                )
            )
    return problems


def _unknown_streams(data: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Feeds naming a stream that is not defined (checked on the raw data, so this problem is
    reported together with any others rather than only once everything else is valid)."""
    streams = data.get("streams")
    feeds = data.get("feeds")
    if not isinstance(streams, dict) or not isinstance(feeds, list):
        return
    known = ", ".join(map(str, streams))
    for index, feed in enumerate(feeds):
        stream = feed.get("stream") if isinstance(feed, dict) else None
        if isinstance(stream, str) and stream not in streams:
            yield ("feeds", index, "stream"), f"unknown stream {stream!r} (known: {known})"


def _mail_unset(data: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Streams with recipients on a site with no `mail:` section to send through."""
    streams = data.get("streams")
    if data.get("mail") is not None or not isinstance(streams, dict):
        return
    for name, stream in streams.items():
        if isinstance(stream, dict) and stream.get("mail_to"):
            yield (
                ("streams", name, "mail_to"),
                "needs a top-level mail: section (smtp server and from address) to send with",
            )


def _describe(
    error: ValidationError, lines: dict[tuple[Any, ...], int]
) -> list[tuple[int, tuple[Any, ...], str]]:
    problems = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append((_line_of(loc, lines), loc, message))
    return problems


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    """The line of the deepest key of `loc` that the file has (a missing key: its parent)."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Paths and relative file: URLs are relative to the config file, not the working dir."""
    site = settings.site
    site = site.model_copy(
        update={
            "output_dir": (base / site.output_dir).resolve(),
            "state_dir": (base / site.state_dir).resolve(),
            "templates": (base / site.templates).resolve() if site.templates else None,
            "database": _resolve_sqlite(site.database, base),
        }
    )
    feeds = tuple(
        feed.model_copy(update={"url": _resolve_file_url(feed.url, base)})
        if feed.url.startswith("file:")
        else feed  # frozen: shared, not copied (20,000 copies took a fifth of `check`)
        for feed in settings.feeds
    )
    return settings.model_copy(update={"site": site, "feeds": feeds})


def _resolve_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + str((base / rest).resolve())
    return url


def _resolve_file_url(url: str, base: Path) -> str:
    if not url.startswith("file:"):
        return url
    path = url.removeprefix("file://") if url.startswith("file://") else url.removeprefix("file:")
    return (base / path).resolve().as_uri() if not path.startswith("/") else url
