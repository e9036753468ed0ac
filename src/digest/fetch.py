"""Fetch stage: get the bytes for one feed URL, politely and safely.

Owns conditional GET, size and time limits, redirects, status mapping, Gemini trust on first
use and file:// reads. Knows nothing about parsing or the database: the caching state and the
known Gemini host keys it needs come in as data (`CacheState`, `known_hosts`) and go out as data.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from digest import PROJECT_URL, __version__, gemini
from digest.addresses import AddressPolicy, AddressRefused, CheckingResolver
from digest.config import FetchSettings

USER_AGENT = f"digest/{__version__} (+{PROJECT_URL})"  # unless fetch.user_agent says otherwise
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class CacheState:
    """What the last successful fetch left for the next one."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None


class Outcome(enum.Enum):
    OK = "ok"  # new body to parse
    NOT_MODIFIED = "not_modified"  # 304
    UNCHANGED = "unchanged"  # 200 with the same bytes as last time
    GONE = "gone"  # 410: disable the feed
    ERROR = "error"  # anything else: back off


@dataclass(frozen=True)
class FetchResult:
    url: str
    outcome: Outcome
    status: int | None = None
    final_url: str | None = None
    permanent_url: str | None = None  # set only when every redirect hop was 301/308
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cache: CacheState = field(default_factory=CacheState)
    error: str | None = None
    retry_after: datetime | None = None  # from Retry-After on 429/503, Gemini 44
    fresh_until: datetime | None = None  # from Cache-Control max-age / Expires
    # The last Gemini host connected to ("host:port") and its certificate key fingerprint, so
    # the caller can pin a first-seen key or offer a changed one to the operator.
    tls_host: str | None = None
    tls_fingerprint: str | None = None


_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, "
    "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
)
_ACCEPT_ENCODING = "gzip, deflate"

_HTTP_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_SUCCESS = frozenset({Outcome.OK, Outcome.NOT_MODIFIED, Outcome.UNCHANGED})
_READ_CHUNK = 64 * 1024

_GEMINI_REDIRECT_STATUSES = frozenset(range(30, 40))
_GEMINI_PERMANENT_REDIRECT_STATUSES = frozenset({31})
# Names from the Gemini specification; a code it does not define is named by its class.
_GEMINI_STATUS_NAMES = {
    40: "temporary failure",
    41: "server unavailable",
    42: "CGI error",
    43: "proxy error",
    44: "slow down",
    50: "permanent failure",
    51: "not found",
    52: "gone",
    53: "proxy request refused",
    59: "bad request",
}

_Origin = tuple[str, str | None, int | None]  # scheme, host, port


class _FetchError(Exception):
    """A failure worded for the user; `Fetcher.fetch` turns it into an ERROR result."""


class Fetcher:
    """One shared aiohttp.ClientSession for a whole poll; an async context manager."""

    def __init__(self, limits: FetchSettings, known_hosts: Mapping[str, str] | None = None) -> None:
        """`known_hosts` maps "host:port" to the pinned fingerprint of each Gemini host's key."""
        self._limits = limits
        self._known_hosts = dict(known_hosts or {})
        self._policy = AddressPolicy(
            allow_private=limits.allow_private_networks,
            allowed=limits.allowed_networks,
        )
        # Queue for slots here, before a fetch's deadline starts, so that many feeds on one
        # host wait their turn instead of timing out in the connector's queue. The connector
        # keeps the same limits as a hard cap on sockets (redirects can change host).
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._host_slots: defaultdict[_Origin, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(limits.per_host)
        )
        self._session: aiohttp.ClientSession | None = None
        self._handlers: dict[str, Callable[[str, URL, CacheState], Awaitable[FetchResult]]] = {
            "http": self._fetch_http,
            "https": self._fetch_http,
            "file": self._fetch_file,
            "gemini": self._fetch_gemini,
        }

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            limit=self._limits.concurrency,
            limit_per_host=self._limits.per_host,
            resolver=CheckingResolver(self._policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # The only deadline is our asyncio.timeout around the whole fetch.
            timeout=aiohttp.ClientTimeout(),
            # Feeds must not share cookies with each other.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, cache: CacheState = CacheState()) -> FetchResult:
        """Fetch one feed URL; a bad feed gives an ERROR result, never an exception."""
        try:
            start = _parse_url(url)
        except ValueError as exc:
            return _error(url, f"invalid URL: {exc}")
        handler = self._handlers.get(start.scheme)
        if handler is None:
            return _error(
                url, f"unsupported URL scheme {start.scheme!r} (use http, https, gemini or file)"
            )
        return await handler(url, start, cache)

    async def _fetch_http(self, url: str, start: URL, cache: CacheState) -> FetchResult:
        trail = _Trail(url, start)
        return await self._bounded(trail, lambda: self._follow(trail, cache))

    async def _bounded(
        self, trail: _Trail, follow: Callable[[], Awaitable[FetchResult]]
    ) -> FetchResult:
        """Run one fetch in its host's slot under the total deadline; failures become ERRORs."""
        start = trail.current
        async with self._host_slots[(start.scheme, start.host, start.port)], self._slots:
            try:
                async with asyncio.timeout(self._limits.timeout):
                    return await follow()
            except TimeoutError:
                return trail.error(f"timed out after {self._limits.timeout:g}s")
            except (_FetchError, AddressRefused, gemini.GeminiError) as exc:
                return trail.error(str(exc))
            except aiohttp.ClientError as exc:
                return trail.error(_describe_client_error(exc))

    async def _follow(self, trail: _Trail, cache: CacheState) -> FetchResult:
        """Request each hop ourselves so every hop meets the same checks and one deadline."""
        if self._session is None:
            raise RuntimeError("Fetcher.fetch called outside 'async with Fetcher(...)'")
        headers = _request_headers(self._limits, cache)
        while True:
            self._policy.check_literal(trail.current)
            async with self._session.get(
                trail.current, headers=headers, allow_redirects=False
            ) as resp:
                trail.statuses.append(resp.status)
                target = _redirect_target(resp)
                if target is None:
                    return await self._finish(trail, resp, cache)
            if trail.redirects > MAX_REDIRECTS:
                raise _FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
            trail.current = target

    async def _finish(
        self, trail: _Trail, resp: aiohttp.ClientResponse, cache: CacheState
    ) -> FetchResult:
        headers = _plain_headers(resp.headers)
        now = datetime.now(UTC)
        if resp.status == 200:
            body = await _read_capped(resp.content, self._limits.max_bytes)
            validators = CacheState(headers.get("etag"), headers.get("last-modified"))
            outcome, kept_body, new_cache = _compare_body(body, cache, validators)
            return trail.result(
                outcome,
                body=kept_body,
                headers=headers,
                cache=new_cache,
                fresh_until=_fresh_until(headers, now),
            )
        if resp.status == 304:
            # A 304 may carry new validators (RFC 9111 4.3.4); keep the old ones otherwise.
            freshened = CacheState(
                headers.get("etag", cache.etag),
                headers.get("last-modified", cache.last_modified),
                cache.body_hash,
            )
            return trail.result(
                Outcome.NOT_MODIFIED,
                headers=headers,
                cache=freshened,
                fresh_until=_fresh_until(headers, now),
            )
        outcome = Outcome.GONE if resp.status == 410 else Outcome.ERROR
        retry_after = None
        if resp.status in _RETRY_AFTER_STATUSES:
            retry_after = _parse_retry_after(headers.get("retry-after"), now)
        return trail.result(
            outcome, headers=headers, error=_status_text(resp), retry_after=retry_after
        )

    async def _fetch_file(self, url: str, _start: URL, cache: CacheState) -> FetchResult:
        try:
            body = await asyncio.to_thread(_read_file, _file_path(url), self._limits.max_bytes)
        except _FetchError as exc:
            return _error(url, str(exc))
        outcome, kept_body, new_cache = _compare_body(body, cache, CacheState())
        return FetchResult(url, outcome, final_url=url, body=kept_body, cache=new_cache)

    async def _fetch_gemini(self, url: str, start: URL, cache: CacheState) -> FetchResult:
        trail = _Trail(
            url,
            start,
            redirect_statuses=_GEMINI_REDIRECT_STATUSES,
            permanent_statuses=_GEMINI_PERMANENT_REDIRECT_STATUSES,
        )
        return await self._bounded(trail, lambda: self._follow_gemini(trail, cache))

    async def _follow_gemini(self, trail: _Trail, cache: CacheState) -> FetchResult:
        while True:
            host = trail.current.raw_host  # IDNA-encoded: the form for SNI and known hosts
            if not host:
                raise _FetchError("URL has no host")
            port = trail.current.port or gemini.DEFAULT_PORT
            async with gemini.connect(host, port, self._policy.check) as connection:
                self._check_key(trail, gemini.host_key(host, port), connection.fingerprint)
                response = await connection.request(str(trail.current))
                trail.statuses.append(response.status)
                if response.status // 10 == 2:
                    body = await connection.read_body(self._limits.max_bytes)
                    return _gemini_success(trail, response, body, cache)
            if response.status // 10 != 3:
                return _gemini_failure(trail, response)
            if trail.redirects > MAX_REDIRECTS:
                raise _FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
            trail.current = _gemini_redirect_target(trail.current, response.meta)

    def _check_key(self, trail: _Trail, host: str, fingerprint: str) -> None:
        """Trust on first use: a new host's key is accepted, a known host's must not change."""
        trail.tls_host, trail.tls_fingerprint = host, fingerprint
        known = self._known_hosts.get(host)
        if known is not None and known != fingerprint:
            raise _FetchError(
                f"certificate for {host} changed (known {known}, now {fingerprint}); "
                f"run `digest trust {host}` to accept it"
            )


@dataclass
class _Trail:
    """The hops of one HTTP fetch so far, so any result can say where it ended."""

    url: str
    current: URL
    statuses: list[int] = field(default_factory=list)
    # Gemini fetches bring their own redirect codes (30, 31) and a certificate key per hop.
    redirect_statuses: frozenset[int] = _REDIRECT_STATUSES
    permanent_statuses: frozenset[int] = _PERMANENT_REDIRECT_STATUSES
    tls_host: str | None = None
    tls_fingerprint: str | None = None

    @property
    def redirects(self) -> int:
        return sum(status in self.redirect_statuses for status in self.statuses)

    def result(
        self,
        outcome: Outcome,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        cache: CacheState | None = None,
        error: str | None = None,
        retry_after: datetime | None = None,
        fresh_until: datetime | None = None,
    ) -> FetchResult:
        hops = self.statuses[:-1]
        moved_for_good = bool(hops) and all(s in self.permanent_statuses for s in hops)
        return FetchResult(
            url=self.url,
            outcome=outcome,
            status=self.statuses[-1] if self.statuses else None,
            final_url=str(self.current),
            permanent_url=str(self.current) if moved_for_good and outcome in _SUCCESS else None,
            body=body,
            headers=headers or {},
            cache=cache or CacheState(),
            error=error,
            retry_after=retry_after,
            fresh_until=fresh_until,
            tls_host=self.tls_host,
            tls_fingerprint=self.tls_fingerprint,
        )

    def error(self, message: str) -> FetchResult:
        return self.result(Outcome.ERROR, error=message)


@functools.lru_cache(maxsize=8192)
def _parse_url(url: str) -> URL:
    """A feed's URL, parsed once for all its polls (yarl's URL is immutable): a daemon polls
    the same URLs again and again, and at a thousand 304s a second the parse shows."""
    return URL(url)


def _request_headers(limits: FetchSettings, cache: CacheState) -> dict[str, str]:
    headers = {
        "User-Agent": limits.user_agent or USER_AGENT,
        "Accept": _ACCEPT,
        "Accept-Encoding": _ACCEPT_ENCODING,
    }
    if cache.etag is not None:
        headers["If-None-Match"] = cache.etag
    if cache.last_modified is not None:
        headers["If-Modified-Since"] = cache.last_modified
    return headers


def _redirect_target(resp: aiohttp.ClientResponse) -> URL | None:
    """Where a redirect points, or None when the response is not a redirect."""
    if resp.status not in _REDIRECT_STATUSES:
        return None
    location = resp.headers.get("Location")
    if not location:
        raise _FetchError(f"{_status_text(resp)} without a Location header")
    try:
        target = resp.url.join(URL(location))
    except ValueError:
        raise _FetchError(f"invalid redirect Location: {location!r}") from None
    if target.scheme not in _HTTP_SCHEMES:
        raise _FetchError(
            f"refused redirect to {target}: only http and https redirects are followed"
        )
    return target


async def _read_capped(content: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """Read the decoded body, stopping as soon as it passes the cap (a gzip bomb stops here)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in content.iter_chunked(_READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise _FetchError(_too_large(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return f"body exceeds {max_bytes} bytes"


def _compare_body(
    body: bytes, old: CacheState, validators: CacheState
) -> tuple[Outcome, bytes | None, CacheState]:
    """The same bytes as last time need no parsing: UNCHANGED and no body."""
    body_hash = hashlib.sha256(body).hexdigest()
    new_cache = replace(validators, body_hash=body_hash)
    if body_hash == old.body_hash:
        return Outcome.UNCHANGED, None, new_cache
    return Outcome.OK, body, new_cache


def _plain_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    plain: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        # Repeated headers fold into one, as HTTP allows for list-valued fields.
        plain[key] = f"{plain[key]}, {value}" if key in plain else value
    return plain


def _status_text(resp: aiohttp.ClientResponse) -> str:
    # The standard phrase, not the server's: servers shout ("NOT FOUND") or leave it out.
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = resp.reason or ""
    return f"HTTP {resp.status} {reason}".rstrip()


def _parse_http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # A "-0000" zone parses as naive; HTTP dates are always GMT.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After is delta seconds or an HTTP date; as the server said it (digest.due caps it)."""
    if value is None:
        return None
    delay = _delta_seconds(value)
    if delay is not None:
        return now + delay
    return _parse_http_date(value)


def _delta_seconds(value: str) -> timedelta | None:
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    # int() refuses huge digit strings; past nine digits (31 years) every cap in digest.due applies.
    return timedelta(seconds=int(digits) if len(digits) <= 9 else 10**9)


def _fresh_until(headers: Mapping[str, str], now: datetime) -> datetime | None:
    """The earliest next poll the server asks for, from Cache-Control max-age or Expires
    (digest.due caps it)."""
    directives = _cache_control(headers.get("cache-control", ""))
    if "no-cache" in directives or "no-store" in directives:
        return None
    until: datetime | None = None
    max_age = _delta_seconds(directives.get("max-age") or "")
    if max_age is not None:
        until = now + max_age
    elif "expires" in headers:
        until = _parse_http_date(headers["expires"])
    if until is None or until <= now:
        return None
    return until


def _cache_control(value: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in value.split(","):
        name, _, argument = part.strip().partition("=")
        if name:
            directives[name.lower()] = argument.strip('"') if argument else None
    return directives


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    # Most specific classes first: each is a subclass of a later one.
    match exc:
        case aiohttp.ClientConnectorDNSError():
            return f"could not resolve host {exc.host}"
        case aiohttp.ClientConnectorCertificateError():
            return f"TLS certificate of {exc.host} not accepted: {exc.certificate_error}"
        case aiohttp.ClientConnectorError():
            reason = os.strerror(exc.errno) if exc.errno else str(exc.os_error)
            return f"could not connect to {exc.host}:{exc.port}: {reason}"
        case aiohttp.ServerDisconnectedError():
            return "server closed the connection before the response was complete"
        case aiohttp.ClientPayloadError():
            return f"broken response body: {exc}"
        case aiohttp.ClientResponseError():
            return f"invalid HTTP response: {exc.message}"
        case aiohttp.InvalidURL():
            return f"invalid URL: {exc}"
    return f"network error: {exc or type(exc).__name__}"


def _gemini_success(
    trail: _Trail, response: gemini.Response, body: bytes, cache: CacheState
) -> FetchResult:
    # An empty meta means text/gemini (Gemini specification 3.3); the parser reads the type.
    content_type = response.meta or "text/gemini; charset=utf-8"
    outcome, kept_body, new_cache = _compare_body(body, cache, CacheState())
    return trail.result(
        outcome, body=kept_body, headers={"content-type": content_type}, cache=new_cache
    )


def _gemini_failure(trail: _Trail, response: gemini.Response) -> FetchResult:
    """Any status but success and redirect: 52 disables the feed, the rest back off."""
    status = response.status
    if status // 10 == 1:
        return trail.error(f"the capsule asks for input (status {status}): not a feed")
    if status // 10 == 6:
        return trail.error(f"the capsule requires a client certificate ({status})")
    name = _GEMINI_STATUS_NAMES.get(status) or _GEMINI_STATUS_NAMES[status // 10 * 10]
    message = f"Gemini {status} {name}"
    if status == 44:
        # The meta of 44 is the number of seconds to wait.
        delay = _delta_seconds(response.meta)
        retry_after = None if delay is None else datetime.now(UTC) + delay
        return trail.result(Outcome.ERROR, error=message, retry_after=retry_after)
    # The server's own words can say why; shown only as plain text, and not when they merely
    # repeat the name ("51 Not Found").
    meta = response.meta.strip()
    if meta and meta.isprintable() and meta.lower() != name.lower():
        message += f": {meta[:200]}"
    return trail.result(Outcome.GONE if status == 52 else Outcome.ERROR, error=message)


def _gemini_redirect_target(current: URL, meta: str) -> URL:
    try:
        target = URL(gemini.resolve(str(current), meta.strip()))
    except ValueError:
        raise _FetchError(f"invalid redirect target: {meta!r}") from None
    if target.scheme != "gemini":
        raise _FetchError(
            f"refused redirect to {target}: only gemini redirects are followed from gemini"
        )
    return target


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _FetchError(f"file:// URL names host {parts.netloc!r}: only local files are read")
    return url2pathname(parts.path)


def _read_file(path: str, max_bytes: int) -> bytes:
    try:
        # Checked before open(): opening a FIFO would block the worker thread forever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _FetchError(f"not a regular file: {path}")
        with open(path, "rb") as file:
            body = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise _FetchError(f"file not found: {path}") from None
    except OSError as exc:
        raise _FetchError(f"cannot read {path}: {exc.strerror}") from None
    if len(body) > max_bytes:
        raise _FetchError(_too_large(max_bytes))
    return body


def _error(url: str, message: str) -> FetchResult:
    return FetchResult(url, Outcome.ERROR, error=message)
