"""The fetch stage against real servers on 127.0.0.1 (and 127.0.0.2 for the SSRF hop)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from pytest_httpserver import HTTPServer

from digest.config import FetchSettings
from digest.fetch import CacheState, Fetcher, FetchResult, Outcome
from tests.fetch_servers import (
    InFlight,
    WebHandler,
    drip_one_byte_per_second,
    gzip_of_zeros,
    raw_server,
    web_server,
)
from tests.gemini_servers import free_port

RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
LOCAL = FetchSettings(allow_private_networks=True)
NO_CACHE = CacheState()
MB = 1024 * 1024
REFUSAL_HINT = "(set fetch.allow_private_networks to allow)"


def fetch(url: str, cache: CacheState = NO_CACHE, limits: FetchSettings = LOCAL) -> FetchResult:
    async def run() -> FetchResult:
        async with Fetcher(limits) as fetcher:
            return await fetcher.fetch(url, cache)

    return asyncio.run(run())


def serve(
    server: HTTPServer,
    path: str,
    body: bytes = RSS,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    server.expect_request(path).respond_with_data(body, status=status, headers=headers)


def redirect(server: HTTPServer, path: str, location: str, status: int = 301) -> None:
    serve(server, path, b"", status=status, headers={"Location": location})


# One server per address for the whole session (starting and stopping werkzeug is slow);
# `clear()` forgets the handlers and the log between tests.
@pytest.fixture(scope="session")
def loopback_server() -> Iterator[HTTPServer]:
    with HTTPServer(host="127.0.0.1") as httpserver:
        yield httpserver


@pytest.fixture(scope="session")
def second_loopback_server() -> Iterator[HTTPServer]:
    with HTTPServer(host="127.0.0.2") as httpserver:
        yield httpserver


@pytest.fixture
def server(loopback_server: HTTPServer) -> Iterator[HTTPServer]:
    yield loopback_server
    loopback_server.clear()


@pytest.fixture
def other_server(second_loopback_server: HTTPServer) -> Iterator[HTTPServer]:
    """A second loopback address: "another private address" that really answers."""
    yield second_loopback_server
    second_loopback_server.clear()


# --- conditional GET and body hash ---------------------------------------------------------


def test_etag_round_trip(server: HTTPServer) -> None:
    etag = 'W/"5e1-Ab+c"'
    last_modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.expect_ordered_request("/feed").respond_with_data(
        RSS, headers={"ETag": etag, "Last-Modified": last_modified}
    )
    server.expect_ordered_request("/feed").respond_with_data(b"", status=304)

    first = fetch(server.url_for("/feed"))
    second = fetch(server.url_for("/feed"), first.cache)

    assert first.outcome is Outcome.OK
    assert first.body == RSS
    assert first.cache == CacheState(etag, last_modified, hashlib.sha256(RSS).hexdigest())
    assert "If-None-Match" not in server.log[0][0].headers
    sent = server.log[1][0].headers
    assert sent["If-None-Match"] == etag
    assert sent["If-Modified-Since"] == last_modified
    assert second.outcome is Outcome.NOT_MODIFIED
    assert second.status == 304
    assert second.body is None
    assert second.cache == first.cache


def test_request_headers(server: HTTPServer) -> None:
    serve(server, "/feed")
    limits = FetchSettings(allow_private_networks=True, user_agent="digest-test/9 (+mailto:a@b)")

    fetch(server.url_for("/feed"), limits=limits)

    sent = server.log[0][0].headers
    assert sent["User-Agent"] == "digest-test/9 (+mailto:a@b)"
    assert sent["Accept"] == (
        "application/atom+xml, application/rss+xml, application/feed+json, "
        "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
    )
    assert sent["Accept-Encoding"] == "gzip, deflate"


def test_ok_headers_are_a_plain_lower_case_dict(server: HTTPServer) -> None:
    serve(server, "/feed", headers={"Content-Type": "application/rss+xml", "X-Custom-Thing": "Yes"})

    result = fetch(server.url_for("/feed"))

    assert type(result.headers) is dict
    assert result.headers["content-type"] == "application/rss+xml"
    assert result.headers["x-custom-thing"] == "Yes"
    assert all(name == name.lower() for name in result.headers)


def test_same_bytes_are_unchanged_and_new_bytes_are_ok(server: HTTPServer) -> None:
    server.expect_ordered_request("/feed").respond_with_data(RSS)
    server.expect_ordered_request("/feed").respond_with_data(RSS)
    server.expect_ordered_request("/feed").respond_with_data(RSS + b"\n")

    first = fetch(server.url_for("/feed"))
    second = fetch(server.url_for("/feed"), first.cache)
    third = fetch(server.url_for("/feed"), second.cache)

    assert second.outcome is Outcome.UNCHANGED
    assert second.body is None
    assert second.cache.body_hash == first.cache.body_hash
    assert third.outcome is Outcome.OK
    assert third.body == RSS + b"\n"


def test_gzip_body_is_decoded() -> None:
    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(RSS), headers={"Content-Encoding": "gzip"})

    async def run() -> FetchResult:
        async with web_server({"/feed": gzipped}) as base, Fetcher(LOCAL) as fetcher:
            return await fetcher.fetch(f"{base}/feed")

    result = asyncio.run(run())

    assert result.outcome is Outcome.OK
    assert result.body == RSS


# --- redirects ----------------------------------------------------------------------------


def test_two_301_hops_set_permanent_url(server: HTTPServer) -> None:
    redirect(server, "/old", server.url_for("/middle"))
    redirect(server, "/middle", "/new")  # relative Location
    serve(server, "/new")

    result = fetch(server.url_for("/old"))

    assert result.outcome is Outcome.OK
    assert result.body == RSS
    assert result.url == server.url_for("/old")
    assert result.final_url == server.url_for("/new")
    assert result.permanent_url == server.url_for("/new")


def test_a_302_hop_leaves_permanent_url_unset(server: HTTPServer) -> None:
    redirect(server, "/old", "/middle", status=301)
    redirect(server, "/middle", "/new", status=302)
    serve(server, "/new")

    result = fetch(server.url_for("/old"))

    assert result.outcome is Outcome.OK
    assert result.final_url == server.url_for("/new")
    assert result.permanent_url is None


def test_a_308_sets_permanent_url(server: HTTPServer) -> None:
    redirect(server, "/old", "new", status=308)
    serve(server, "/new")

    result = fetch(server.url_for("/old"))

    assert result.outcome is Outcome.OK
    assert result.permanent_url == server.url_for("/new")


def test_a_301_to_a_missing_page_does_not_move_the_feed(server: HTTPServer) -> None:
    redirect(server, "/old", "/new")
    serve(server, "/new", b"no", status=404)

    result = fetch(server.url_for("/old"))

    assert result.outcome is Outcome.ERROR
    assert result.status == 404
    assert result.final_url == server.url_for("/new")
    assert result.permanent_url is None


def test_five_redirects_are_followed_and_six_are_too_many(server: HTTPServer) -> None:
    for hop in range(6):
        redirect(server, f"/r{hop}", f"/r{hop + 1}", status=302)
    serve(server, "/r6")

    five = fetch(server.url_for("/r1"))
    six = fetch(server.url_for("/r0"))

    assert five.outcome is Outcome.OK
    assert five.final_url == server.url_for("/r6")
    assert six.outcome is Outcome.ERROR
    assert six.error == "too many redirects (more than 5)"
    assert six.body is None


def test_redirect_without_location_is_an_error(server: HTTPServer) -> None:
    serve(server, "/feed", b"", status=302)

    result = fetch(server.url_for("/feed"))

    assert result.outcome is Outcome.ERROR
    assert result.error == "HTTP 302 Found without a Location header"


# --- status mapping -----------------------------------------------------------------------


def test_410_is_gone(server: HTTPServer) -> None:
    serve(server, "/feed", b"", status=410)

    result = fetch(server.url_for("/feed"))

    assert result.outcome is Outcome.GONE
    assert result.status == 410


@pytest.mark.parametrize(
    ("status", "words"), [(404, "HTTP 404 Not Found"), (500, "HTTP 500 Internal Server Error")]
)
def test_client_and_server_errors_keep_the_status(
    server: HTTPServer, status: int, words: str
) -> None:
    serve(server, "/feed", b"oops", status=status)

    result = fetch(server.url_for("/feed"))

    assert result.outcome is Outcome.ERROR
    assert result.status == status
    assert result.error == words
    assert result.body is None


def test_429_retry_after_seconds(server: HTTPServer) -> None:
    serve(server, "/feed", b"", status=429, headers={"Retry-After": "120"})

    before = datetime.now(UTC)
    result = fetch(server.url_for("/feed"))
    after = datetime.now(UTC)

    assert result.outcome is Outcome.ERROR
    assert result.status == 429
    assert result.retry_after is not None
    assert before + timedelta(seconds=120) <= result.retry_after <= after + timedelta(seconds=120)


def test_503_retry_after_http_date(server: HTTPServer) -> None:
    when = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    serve(
        server,
        "/feed",
        b"",
        status=503,
        headers={"Retry-After": format_datetime(when, usegmt=True)},
    )

    result = fetch(server.url_for("/feed"))

    assert result.outcome is Outcome.ERROR
    assert result.status == 503
    assert result.retry_after == when
    assert result.retry_after.tzinfo is not None


def test_absurd_retry_after_is_read_without_overflow(server: HTTPServer) -> None:
    """Fifty nines: reported as decades away (digest.due caps it), not an OverflowError."""
    serve(server, "/feed", b"", status=429, headers={"Retry-After": "9" * 50})

    after = datetime.now(UTC)
    result = fetch(server.url_for("/feed"))

    assert result.retry_after is not None
    assert result.retry_after > after + timedelta(days=365 * 30)


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        ("max-age=600", timedelta(seconds=600)),
        ("public, max-age=172800", timedelta(days=2)),  # as said: digest.due caps it
        ("no-cache, max-age=600", None),
        ("max-age=600, no-store", None),
    ],
)
def test_cache_control_sets_fresh_until(
    server: HTTPServer, cache_control: str, expected: timedelta | None
) -> None:
    serve(server, "/feed", headers={"Cache-Control": cache_control})

    before = datetime.now(UTC)
    result = fetch(server.url_for("/feed"))
    after = datetime.now(UTC)

    assert result.outcome is Outcome.OK
    if expected is None:
        assert result.fresh_until is None
    else:
        assert result.fresh_until is not None
        assert before + expected <= result.fresh_until <= after + expected


def test_expires_sets_fresh_until(server: HTTPServer) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    serve(server, "/feed", headers={"Expires": format_datetime(expires, usegmt=True)})

    result = fetch(server.url_for("/feed"))

    assert result.fresh_until == expires


def test_connection_refused_is_an_error_without_status() -> None:
    port = free_port()  # nothing listens there (nor will, from another test worker)

    result = fetch(f"http://127.0.0.1:{port}/feed")

    assert result.outcome is Outcome.ERROR
    assert result.status is None
    assert result.error == f"could not connect to 127.0.0.1:{port}: Connection refused"


# --- limits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    bomb = gzip_of_zeros(200 * MB)
    assert len(bomb) < MB  # the point of a bomb: tiny on the wire
    return bomb


def test_gzip_bomb_stops_at_the_cap_with_little_memory(gzip_bomb: bytes) -> None:
    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=gzip_bomb, headers={"Content-Encoding": "gzip"})

    async def run() -> tuple[FetchResult, int]:
        limits = FetchSettings(allow_private_networks=True, max_bytes=MB)
        async with web_server({"/feed": bomb}) as base, Fetcher(limits) as fetcher:
            tracemalloc.start()
            try:
                result = await fetcher.fetch(f"{base}/feed")
                return result, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    result, peak = asyncio.run(run())

    assert result.outcome is Outcome.ERROR
    assert result.error == f"body exceeds {MB} bytes"
    assert result.status == 200
    assert result.body is None
    assert peak < 32 * MB, f"peak traced memory {peak / MB:.1f} MB"


def test_huge_plain_body_is_cut_at_the_cap() -> None:
    size = 50 * MB
    sent = 0

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        chunk = bytes(64 * 1024)
        with suppress(ConnectionError):
            while sent < size:
                await response.write(chunk)
                sent += len(chunk)
        return response

    async def run() -> FetchResult:
        limits = FetchSettings(allow_private_networks=True, max_bytes=MB)
        async with web_server({"/feed": huge}) as base, Fetcher(limits) as fetcher:
            return await fetcher.fetch(f"{base}/feed")

    result = asyncio.run(run())

    assert result.outcome is Outcome.ERROR
    assert result.error == f"body exceeds {MB} bytes"
    assert result.status == 200
    assert sent < size, "the client read the whole body instead of hanging up at the cap"


@pytest.mark.slow  # waits out the real total deadline
def test_one_byte_a_second_is_cut_at_the_total_deadline() -> None:
    async def run() -> FetchResult:
        limits = FetchSettings(allow_private_networks=True, timeout=2)
        async with raw_server(drip_one_byte_per_second) as base, Fetcher(limits) as fetcher:
            return await fetcher.fetch(f"{base}/feed")

    started = time.monotonic()
    result = asyncio.run(run())
    elapsed = time.monotonic() - started

    assert result.outcome is Outcome.ERROR
    assert result.error == "timed out after 2s"
    assert result.status == 200  # the headers came in time; the body did not
    assert elapsed < 10


# --- SSRF ---------------------------------------------------------------------------------


def test_direct_loopback_url_is_refused(server: HTTPServer) -> None:
    serve(server, "/feed")

    result = fetch(server.url_for("/feed"), limits=FetchSettings())

    assert result.outcome is Outcome.ERROR
    assert result.error == f"refused: 127.0.0.1 is a loopback address {REFUSAL_HINT}"
    assert server.log == []


def test_host_name_resolving_to_loopback_is_refused(server: HTTPServer) -> None:
    serve(server, "/feed")

    result = fetch(f"http://localhost:{server.port}/feed", limits=FetchSettings())

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith("refused: localhost resolves to ")
    assert result.error.endswith(f", a loopback address {REFUSAL_HINT}")
    assert server.log == []


def test_ipv4_mapped_ipv6_literal_is_refused() -> None:
    result = fetch("http://[::ffff:127.0.0.1]:9/feed", limits=FetchSettings())

    assert result.outcome is Outcome.ERROR
    assert result.error == f"refused: ::ffff:7f00:1 is a loopback address {REFUSAL_HINT}"


def test_redirect_to_another_private_address_is_refused(
    server: HTTPServer, other_server: HTTPServer
) -> None:
    redirect(server, "/feed", other_server.url_for("/internal"))
    serve(other_server, "/internal", b"secret")
    only_first_server = FetchSettings(allowed_networks=("127.0.0.1/32",))

    refused = fetch(server.url_for("/feed"), limits=only_first_server)
    assert refused.outcome is Outcome.ERROR
    assert refused.error == f"refused: 127.0.0.2 is a loopback address {REFUSAL_HINT}"
    assert refused.final_url == other_server.url_for("/internal")
    assert refused.body is None
    assert other_server.log == []

    # The same hop with private networks allowed reaches the server: the guard refused it.
    allowed = fetch(server.url_for("/feed"))
    assert allowed.outcome is Outcome.OK
    assert allowed.body == b"secret"


def test_redirect_to_a_host_name_is_checked_when_resolved(
    server: HTTPServer, other_server: HTTPServer
) -> None:
    redirect(other_server, "/feed", f"http://localhost:{server.port}/feed")
    serve(server, "/feed")

    result = fetch(
        other_server.url_for("/feed"), limits=FetchSettings(allowed_networks=("127.0.0.2/32",))
    )

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith("refused: localhost resolves to ")
    assert result.error.endswith(f", a loopback address {REFUSAL_HINT}")
    assert server.log == []


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("http://10.1.2.3/feed", "refused: 10.1.2.3 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local"),
        ("http://[::1]/feed", "refused: ::1 is a loopback address"),
    ],
)
def test_redirect_hops_are_checked(server: HTTPServer, location: str, error: str) -> None:
    redirect(server, "/feed", location, status=302)

    result = fetch(
        server.url_for("/feed"), limits=FetchSettings(allowed_networks=("127.0.0.1/32",))
    )

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith(error)
    assert result.error.endswith(REFUSAL_HINT)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gemini://example.org/"])
def test_redirect_to_another_scheme_is_refused(server: HTTPServer, location: str) -> None:
    redirect(server, "/feed", location)

    result = fetch(server.url_for("/feed"))

    assert result.outcome is Outcome.ERROR
    assert result.error == (
        f"refused redirect to {location}: only http and https redirects are followed"
    )
    assert result.body is None
    assert result.permanent_url is None


# --- file:// and other schemes -------------------------------------------------------------


def test_file_url_is_read_and_then_unchanged(tmp_path: Path) -> None:
    feed = tmp_path / "my feed.xml"
    feed.write_bytes(RSS)

    first = fetch(feed.as_uri())
    second = fetch(feed.as_uri(), first.cache)

    assert first.outcome is Outcome.OK
    assert first.body == RSS
    assert first.cache.body_hash == hashlib.sha256(RSS).hexdigest()
    assert second.outcome is Outcome.UNCHANGED
    assert second.body is None


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"

    result = fetch(missing.as_uri())

    assert result.outcome is Outcome.ERROR
    assert result.error == f"file not found: {missing}"


def test_file_larger_than_the_cap(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(RSS)

    result = fetch(feed.as_uri(), limits=FetchSettings(max_bytes=len(RSS) - 1))

    assert result.outcome is Outcome.ERROR
    assert result.error == f"body exceeds {len(RSS) - 1} bytes"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("gemini://[::1/feed", "invalid URL: Invalid IPv6 URL"),
        ("http://[::1/feed", "invalid URL: Invalid IPv6 URL"),
        (
            "ftp://example.org/feed",
            "unsupported URL scheme 'ftp' (use http, https, gemini or file)",
        ),
    ],
)
def test_other_schemes_and_bad_urls(url: str, error: str) -> None:
    result = fetch(url)

    assert result.outcome is Outcome.ERROR
    assert result.error == error


# --- concurrency --------------------------------------------------------------------------


def test_many_feeds_through_one_fetcher_respect_the_per_host_limit() -> None:
    total = InFlight()
    hosts = [InFlight(total), InFlight(total)]
    per_host = 2

    def counting(counter: InFlight) -> WebHandler:
        async def handle(request: web.Request) -> web.Response:
            counter.enter()
            try:
                # Hold each request until both hosts are busy at once (or give up after 5 s),
                # then a little longer, so any extra connection would be seen in flight.
                deadline = time.monotonic() + 5
                while total.current < 2 * per_host and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                return web.Response(body=RSS)
            finally:
                counter.leave()

        return handle

    async def run() -> list[FetchResult]:
        limits = FetchSettings(allow_private_networks=True, per_host=per_host)
        async with (
            web_server({"/feed/{n}": counting(hosts[0])}) as first,
            web_server({"/feed/{n}": counting(hosts[1])}) as second,
            Fetcher(limits) as fetcher,
        ):
            urls = [f"{base}/feed/{n}" for base in (first, second) for n in range(8)]
            return await asyncio.gather(*(fetcher.fetch(url) for url in urls))

    results = asyncio.run(run())

    assert [result.outcome for result in results] == [Outcome.OK] * 16
    assert [host.peak for host in hosts] == [per_host, per_host]
    assert total.peak == 2 * per_host


def test_global_concurrency_limit() -> None:
    in_flight = InFlight()

    async def handle(request: web.Request) -> web.Response:
        in_flight.enter()
        try:
            await asyncio.sleep(0.2)
            return web.Response(body=RSS)
        finally:
            in_flight.leave()

    async def run() -> list[FetchResult]:
        limits = FetchSettings(allow_private_networks=True, concurrency=3, per_host=10)
        async with web_server({"/feed/{n}": handle}) as base, Fetcher(limits) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(f"{base}/feed/{n}") for n in range(9)))

    results = asyncio.run(run())

    assert all(result.outcome is Outcome.OK for result in results)
    assert 1 <= in_flight.peak <= 3
