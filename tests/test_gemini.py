"""Polling gemini:// feeds against real servers on 127.0.0.1: jetforce for real capsules, our
own TLS server (tests/gemini_servers.py) for the answers jetforce never gives."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.config import FeedSettings, FetchSettings
from digest.fetch import CacheState, Fetcher, FetchResult, Outcome
from digest.parse import parse_feed
from digest.poll import Poller
from digest.store import EntryRow, Store, feed_health
from digest.store.hosts import known_hosts, offer_host, remember_host, trust_host
from digest.store.models import GeminiHostRow
from tests.conftest import add_feeds
from tests.gemini_servers import (
    Certificate,
    Handler,
    free_port,
    gemini_server,
    gemini_server_thread,
    jetforce,
    make_certificate,
    never_answer,
    raw,
    reply,
)

LOCAL = FetchSettings(allow_private_networks=True)
NO_CACHE = CacheState()
NOW = datetime(2025, 3, 28, 12, tzinfo=UTC)

GEMSUB = """\
# A Capsule

Notes from a small capsule.

=> 2025-03-27-post.gmi 2025-03-27 - A Post
=> 2025-03-20-older.gmi 2025-03-20 An Older Post
=> about.gmi About this capsule
"""

ATOM = """\
<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Capsule Atom</title>
  <id>gemini://capsule.example/</id>
  <updated>2025-03-27T10:00:00Z</updated>
  <entry>
    <title>Atom Post</title>
    <id>tag:capsule.example,2025:1</id>
    <link href="gemini://capsule.example/atom-post.gmi"/>
    <updated>2025-03-27T10:00:00Z</updated>
    <summary>A summary.</summary>
  </entry>
</feed>
"""


def fetch(
    url: str,
    *,
    limits: FetchSettings = LOCAL,
    known: dict[str, str] | None = None,
    cache: CacheState = NO_CACHE,
) -> FetchResult:
    async def run() -> FetchResult:
        async with Fetcher(limits, known) as fetcher:
            return await fetcher.fetch(url, cache)

    return asyncio.run(run())


def fetch_from(
    routes: dict[str, Handler],
    certificate: Certificate,
    path: str,
    *,
    limits: FetchSettings = LOCAL,
    known: dict[str, str] | None = None,
) -> tuple[FetchResult, list[str]]:
    """Fetch `path` from our own server; also returns the request lines it received."""

    async def run() -> tuple[FetchResult, list[str]]:
        async with gemini_server(routes, certificate) as server, Fetcher(limits, known) as fetcher:
            result = await fetcher.fetch(server.url + path)
            return result, server.requests

    return asyncio.run(run())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("certs"), "server")


def write_capsule(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "index.gmi").write_text(GEMSUB)
    (directory / "feed.xml").write_text(ATOM)
    (directory / "gemlog").mkdir(exist_ok=True)
    (directory / "gemlog" / "index.gmi").write_text(GEMSUB)
    return directory


@pytest.fixture(scope="module")
def capsule(tmp_path_factory: pytest.TempPathFactory, certificate: Certificate) -> Iterator[str]:
    """One jetforce for the read-only tests (starting one takes about a second)."""
    directory = write_capsule(tmp_path_factory.mktemp("capsule"))
    with jetforce(directory, certificate, free_port()) as url:
        yield url


# --- real capsules (jetforce) ---------------------------------------------------------------


def test_gemsub_page_is_fetched_and_parsed(capsule: str, certificate: Certificate) -> None:
    result = fetch(capsule + "/")

    assert result.outcome is Outcome.OK, result.error
    assert result.status == 20
    assert result.headers["content-type"].startswith("text/gemini")
    assert result.body == GEMSUB.encode()
    assert result.tls_host == capsule.removeprefix("gemini://")
    assert result.tls_fingerprint == certificate.fingerprint
    parsed = parse_feed(result.body, url=result.final_url or result.url, headers=result.headers)
    assert parsed.title == "A Capsule"
    assert [(e.title, e.link, e.published) for e in parsed.entries] == [
        ("A Post", f"{capsule}/2025-03-27-post.gmi", datetime(2025, 3, 27, 12, tzinfo=UTC)),
        ("An Older Post", f"{capsule}/2025-03-20-older.gmi", datetime(2025, 3, 20, 12, tzinfo=UTC)),
    ]


def test_atom_feed_over_gemini_is_parsed_by_its_media_type(capsule: str) -> None:
    result = fetch(capsule + "/feed.xml")

    assert result.outcome is Outcome.OK, result.error
    assert result.headers == {"content-type": "application/xml"}
    assert result.body is not None
    parsed = parse_feed(result.body, url=result.url, headers=result.headers)
    assert parsed.title == "Capsule Atom"
    assert [(e.title, e.link) for e in parsed.entries] == [
        ("Atom Post", "gemini://capsule.example/atom-post.gmi")
    ]


def test_same_body_again_is_unchanged(capsule: str) -> None:
    first = fetch(capsule + "/")
    second = fetch(capsule + "/", cache=first.cache)

    assert first.outcome is Outcome.OK
    assert second.outcome is Outcome.UNCHANGED
    assert second.body is None
    assert second.cache.body_hash == first.cache.body_hash


def test_directory_without_slash_moves_for_good(capsule: str) -> None:
    result = fetch(capsule + "/gemlog")  # jetforce answers 31 with the slash added

    assert result.outcome is Outcome.OK, result.error
    assert result.permanent_url == capsule + "/gemlog/"
    assert result.body == GEMSUB.encode()


def test_missing_page_is_not_found(capsule: str) -> None:
    result = fetch(capsule + "/nothing-here.gmi")

    assert result.outcome is Outcome.ERROR
    assert result.status == 51
    assert result.error == "Gemini 51 not found"


def test_fingerprint_is_the_one_openssl_prints_for_the_public_key(
    capsule: str, certificate: Certificate
) -> None:
    """The docstring's promise: an operator can check a key with openssl alone."""
    openssl = subprocess.run(
        f"openssl x509 -in {certificate.certfile} -pubkey -noout"
        " | openssl pkey -pubin -outform der | sha256sum",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    )
    assert fetch(capsule + "/").tls_fingerprint == "SHA256:" + openssl.stdout.split()[0]


def test_changed_key_is_refused_until_trusted(tmp_path: Path, store: Store) -> None:
    directory = write_capsule(tmp_path / "capsule")
    port = free_port()
    first_cert = make_certificate(tmp_path, "first")
    second_cert = make_certificate(tmp_path, "second")
    host = f"127.0.0.1:{port}"

    def fetch_with_store() -> FetchResult:
        with store.reading() as session:
            known = known_hosts(session)
        return fetch(f"gemini://{host}/", known=known)

    with jetforce(directory, first_cert, port):
        first = fetch_with_store()
    assert first.outcome is Outcome.OK and first.tls_fingerprint == first_cert.fingerprint
    with store.writing() as session:
        remember_host(session, host, first_cert.fingerprint, NOW)

    with jetforce(directory, second_cert, port):
        refused = fetch_with_store()
        assert refused.outcome is Outcome.ERROR
        assert refused.error == (
            f"certificate for {host} changed (known {first_cert.fingerprint}, "
            f"now {second_cert.fingerprint}); run `digest trust {host}` to accept it"
        )
        assert refused.body is None
        assert (refused.tls_host, refused.tls_fingerprint) == (host, second_cert.fingerprint)
        with store.writing() as session:
            offer_host(session, host, second_cert.fingerprint, NOW + timedelta(hours=1))
        # Offered is not trusted: still refused.
        assert fetch_with_store().outcome is Outcome.ERROR

        with store.writing() as session:
            assert trust_host(session, host)
        accepted = fetch_with_store()
        assert accepted.outcome is Outcome.OK, accepted.error

    with store.reading() as session:
        row = session.get(GeminiHostRow, host)
        assert row is not None
        assert row.fingerprint == second_cert.fingerprint
        assert row.offered_fingerprint is None
        assert row.first_seen == NOW
        assert row.last_seen == NOW + timedelta(hours=1)
    with store.writing() as session:
        assert not trust_host(session, host), "nothing left to accept"


def test_renewed_certificate_with_same_key_is_still_trusted_even_expired(tmp_path: Path) -> None:
    """The pin is the key, not the certificate: renewals keep working, and expiry is not
    checked, as there is no chain to check it against."""
    directory = write_capsule(tmp_path / "capsule")
    port = free_port()
    original = make_certificate(tmp_path, "original")
    renewed = make_certificate(tmp_path, "renewed", key=original.key, expired=True)
    known = {f"127.0.0.1:{port}": original.fingerprint}

    with jetforce(directory, renewed, port):
        result = fetch(f"gemini://127.0.0.1:{port}/", known=known)

    assert result.outcome is Outcome.OK, result.error
    assert result.tls_fingerprint == original.fingerprint


# --- statuses jetforce cannot give (our own server) -----------------------------------------


def test_request_line_and_sni(certificate: Certificate) -> None:
    async def run() -> tuple[FetchResult, list[str], list[str | None]]:
        routes = {"/feed": reply("20 text/gemini", b"# Hi\n")}
        async with gemini_server(routes, certificate) as server, Fetcher(LOCAL) as fetcher:
            url = server.url.replace("127.0.0.1", "localhost") + "/feed"
            return await fetcher.fetch(url), server.requests, server.server_names

    result, requests, server_names = asyncio.run(run())

    assert result.outcome is Outcome.OK, result.error
    assert requests == [result.url]
    assert result.url.startswith("gemini://localhost:")
    assert server_names == ["localhost"]
    assert result.tls_host == result.url.removeprefix("gemini://").removesuffix("/feed")


def test_permanent_redirects_set_permanent_url(certificate: Certificate) -> None:
    routes = {
        "/a": reply("31 /b"),
        "/b": reply("31 c"),  # relative to /b
        "/c": reply("20 text/gemini", GEMSUB.encode()),
    }
    result, requests = fetch_from(routes, certificate, "/a")

    assert result.outcome is Outcome.OK, result.error
    base = result.url.removesuffix("/a")
    assert [request.removeprefix(base) for request in requests] == ["/a", "/b", "/c"]
    assert result.status == 20
    assert result.final_url == base + "/c"
    assert result.permanent_url == base + "/c"


@pytest.mark.parametrize("first", ["30", "31"])
def test_a_temporary_hop_keeps_the_url(certificate: Certificate, first: str) -> None:
    routes = {
        "/a": reply(f"{first} /b"),
        "/b": reply("30 /c"),
        "/c": reply("20 text/gemini", GEMSUB.encode()),
    }
    result, _ = fetch_from(routes, certificate, "/a")

    assert result.outcome is Outcome.OK, result.error
    assert result.final_url == result.url.replace("/a", "/c")
    assert result.permanent_url is None


def test_redirect_loop_stops(certificate: Certificate) -> None:
    result, requests = fetch_from({"/loop": reply("30 /loop")}, certificate, "/loop")

    assert result.outcome is Outcome.ERROR
    assert result.error == "too many redirects (more than 5)"
    assert len(requests) == 6


def test_redirect_out_of_gemini_is_refused(certificate: Certificate) -> None:
    result, _ = fetch_from({"/a": reply("31 https://example.org/feed")}, certificate, "/a")

    assert result.outcome is Outcome.ERROR
    assert result.error == (
        "refused redirect to https://example.org/feed: "
        "only gemini redirects are followed from gemini"
    )
    assert result.permanent_url is None


def test_slow_down_sets_retry_after(certificate: Certificate) -> None:
    before = datetime.now(UTC)
    result, _ = fetch_from({"/f": reply("44 120")}, certificate, "/f")
    after = datetime.now(UTC)

    assert result.outcome is Outcome.ERROR
    assert result.status == 44
    assert result.error == "Gemini 44 slow down"
    assert result.retry_after is not None
    assert before + timedelta(seconds=120) <= result.retry_after <= after + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("header", "outcome", "error"),
    [
        ("51 Not Found", Outcome.ERROR, "Gemini 51 not found"),
        ("52 moved to the web", Outcome.GONE, "Gemini 52 gone: moved to the web"),
        ("40", Outcome.ERROR, "Gemini 40 temporary failure"),
        ("42 script crashed", Outcome.ERROR, "Gemini 42 CGI error: script crashed"),
        ("57 no such thing", Outcome.ERROR, "Gemini 57 permanent failure: no such thing"),
        ("10 Search terms", Outcome.ERROR, "the capsule asks for input (status 10): not a feed"),
        ("11 Password", Outcome.ERROR, "the capsule asks for input (status 11): not a feed"),
        ("60 Who are you?", Outcome.ERROR, "the capsule requires a client certificate (60)"),
        ("62 bad cert", Outcome.ERROR, "the capsule requires a client certificate (62)"),
        ("53 \x1b[31mred", Outcome.ERROR, "Gemini 53 proxy request refused"),
    ],
)
def test_failure_statuses(
    certificate: Certificate, header: str, outcome: Outcome, error: str
) -> None:
    result, _ = fetch_from({"/f": reply(header)}, certificate, "/f")

    assert result.outcome is outcome
    assert result.status == int(header[:2])
    assert result.error == error
    assert result.body is None


def test_empty_meta_means_gemtext(certificate: Certificate) -> None:
    result, _ = fetch_from({"/f": raw(b"20\r\n" + GEMSUB.encode())}, certificate, "/f")

    assert result.outcome is Outcome.OK, result.error
    assert result.headers == {"content-type": "text/gemini; charset=utf-8"}
    assert result.body == GEMSUB.encode()


def test_body_up_to_the_cap_is_read_and_past_it_refused(certificate: Certificate) -> None:
    limits = FetchSettings(allow_private_networks=True, max_bytes=100_000)
    routes = {
        "/fits": reply("20 text/gemini", b"x" * 100_000),
        "/big": reply("20 text/gemini", b"x" * 100_001),
    }
    fits, _ = fetch_from(routes, certificate, "/fits", limits=limits)
    big, _ = fetch_from(routes, certificate, "/big", limits=limits)

    assert fits.outcome is Outcome.OK and fits.body is not None and len(fits.body) == 100_000
    assert big.outcome is Outcome.ERROR
    assert big.error == "body exceeds 100000 bytes"
    assert big.body is None


def test_silent_server_meets_the_deadline(certificate: Certificate) -> None:
    limits = FetchSettings(allow_private_networks=True, timeout=1)
    started = time.monotonic()
    result, requests = fetch_from({"/f": never_answer}, certificate, "/f", limits=limits)

    assert result.outcome is Outcome.ERROR
    assert result.error == "timed out after 1s"
    assert len(requests) == 1
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", "malformed response header 'HTTP/1.1 200 OK'"),
        (b"20text/gemini\r\n", "malformed response header '20text/gemini'"),
        (b"2 text/gemini\r\n", "malformed response header '2 text/gemini'"),
        (b"20 \xff\xfe\r\n", "malformed response header '20 \ufffd\ufffd'"),
        (b"20 " + b"t" * 1025 + b"\r\n", "malformed response header: meta longer than 1024 bytes"),
        (b"20 " + b"t" * 1025 + b"\n", "malformed response header: meta longer than 1024 bytes"),
        (b"20 " + b"t" * 5000, "malformed response header: meta longer than 1024 bytes"),
        (b"20 text/gemini", "malformed response header '20 text/gemini': no line end"),
        (b"", "server closed the connection without a response"),
    ],
)
def test_malformed_headers(certificate: Certificate, data: bytes, error: str) -> None:
    result, _ = fetch_from({"/f": raw(data)}, certificate, "/f")

    assert result.outcome is Outcome.ERROR
    assert result.error == error


def test_meta_of_exactly_1024_bytes_is_accepted(certificate: Certificate) -> None:
    media_type = "text/gemini; x=" + "t" * (1024 - len("text/gemini; x="))
    result, _ = fetch_from({"/f": reply(f"20 {media_type}", b"# Hi\n")}, certificate, "/f")

    assert result.outcome is Outcome.OK, result.error
    assert result.headers == {"content-type": media_type}


# --- trust and addresses --------------------------------------------------------------------


def test_known_key_must_match_and_nothing_is_requested_otherwise(
    certificate: Certificate,
) -> None:
    async def run(pinned: str) -> tuple[FetchResult, list[str]]:
        routes = {"/f": reply("20 text/gemini", b"# Hi\n")}
        async with gemini_server(routes, certificate) as server:
            known = {server.url.removeprefix("gemini://"): pinned}
            async with Fetcher(LOCAL, known) as fetcher:
                return await fetcher.fetch(server.url + "/f"), server.requests

    matching, _ = asyncio.run(run(certificate.fingerprint))
    other, requests = asyncio.run(run("SHA256:" + "0" * 64))

    assert matching.outcome is Outcome.OK, matching.error
    assert other.outcome is Outcome.ERROR
    assert other.error is not None and other.error.startswith("certificate for 127.0.0.1:")
    assert requests == [], "the request is not sent to a host whose key changed"


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ("127.0.0.1", "refused: 127.0.0.1 is a loopback address"),
        ("localhost", "refused: localhost resolves to 127.0.0.1, a loopback address"),
    ],
)
def test_private_addresses_are_refused(certificate: Certificate, host: str, error: str) -> None:
    async def run() -> tuple[FetchResult, list[str]]:
        async with gemini_server({}, certificate) as server, Fetcher(FetchSettings()) as fetcher:
            return await fetcher.fetch(server.url.replace("127.0.0.1", host)), server.requests

    result, requests = asyncio.run(run())

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    # localhost may resolve to ::1 first; either way the loopback address is named.
    assert result.error.replace("::1", "127.0.0.1").startswith(error)
    assert result.error.endswith("(set fetch.allow_private_networks to allow)")
    assert requests == []


def test_redirect_hop_to_a_forbidden_address_is_refused(certificate: Certificate) -> None:
    """127.0.0.1 is allowed by network; its redirect to 127.0.0.2 is checked on its own."""
    limits = FetchSettings(allowed_networks=("127.0.0.1/32",))

    async def run() -> tuple[FetchResult, list[str], list[str]]:
        async with gemini_server({}, certificate, host="127.0.0.2") as inner:
            routes = {"/a": reply(f"31 {inner.url}/feed")}
            async with gemini_server(routes, certificate) as outer, Fetcher(limits) as fetcher:
                result = await fetcher.fetch(outer.url + "/a")
                return result, outer.requests, inner.requests

    result, outer_requests, inner_requests = asyncio.run(run())

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith("refused: 127.0.0.2 is a loopback address")
    assert len(outer_requests) == 1
    assert inner_requests == []
    assert result.permanent_url is None


def test_connection_refused_is_worded() -> None:
    port = free_port()  # nothing listens there
    result = fetch(f"gemini://127.0.0.1:{port}/")

    assert result.outcome is Outcome.ERROR
    assert result.error == f"could not connect to 127.0.0.1:{port}: Connection refused"
    assert result.tls_fingerprint is None


def test_not_tls_is_a_handshake_failure() -> None:
    async def run() -> FetchResult:
        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"20 text/gemini\r\nnot over TLS\n")
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Fetcher(LOCAL) as fetcher:
            return await fetcher.fetch(f"gemini://127.0.0.1:{port}/")

    result = asyncio.run(run())

    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith("TLS handshake with 127.0.0.1:")


# --- the store's host keys ------------------------------------------------------------------


def test_host_store_pins_first_key_and_offers_changes(store: Store) -> None:
    later = NOW + timedelta(days=1)
    with store.writing() as session:
        remember_host(session, "a.example:1965", "SHA256:aa", NOW)
        # A second first use with another key (a race between pollers) does not replace it.
        remember_host(session, "a.example:1965", "SHA256:bb", later)
    with store.reading() as session:
        assert known_hosts(session) == {"a.example:1965": "SHA256:aa"}

    with store.writing() as session:
        offer_host(session, "a.example:1965", "SHA256:bb", later)
    with store.reading() as session:
        assert known_hosts(session) == {"a.example:1965": "SHA256:aa"}, "offered is not trusted"

    # The pinned key seen again withdraws the offer: trust never accepts a key the host dropped.
    with store.writing() as session:
        remember_host(session, "a.example:1965", "SHA256:aa", later)
        assert not trust_host(session, "a.example:1965")

    with store.writing() as session:
        offer_host(session, "a.example:1965", "SHA256:cc", later)
        assert not trust_host(session, "b.example:1965")
        assert trust_host(session, "a.example:1965")
    with store.reading() as session:
        assert known_hosts(session) == {"a.example:1965": "SHA256:cc"}
        row = session.get(GeminiHostRow, "a.example:1965")
        assert row is not None
        assert (row.first_seen, row.last_seen, row.offered_fingerprint) == (NOW, later, None)


# --- end to end through the poller ----------------------------------------------------------


def test_poller_stores_gemsub_entries_and_reports_a_changed_key(
    tmp_path: Path, store: Store
) -> None:
    directory = write_capsule(tmp_path / "capsule")
    port = free_port()
    host = f"127.0.0.1:{port}"
    url = f"gemini://{host}/"
    first_cert = make_certificate(tmp_path, "first")
    second_cert = make_certificate(tmp_path, "second")
    add_feeds(store, [FeedSettings(url=url, name="A Capsule", stream="gemini-links")], NOW)
    poller = Poller(store, FetchSettings(allow_private_networks=True))

    with jetforce(directory, first_cert, port):
        summary = poller.run(every=True)
    assert summary.failures == []
    assert summary.new_entries == 2
    with store.reading() as session:
        assert known_hosts(session) == {host: first_cert.fingerprint}
        stored = session.scalars(select(EntryRow).order_by(EntryRow.published_at)).all()
        assert [(e.title, e.link) for e in stored] == [
            ("An Older Post", f"{url}2025-03-20-older.gmi"),
            ("A Post", f"{url}2025-03-27-post.gmi"),
        ]
        [health] = feed_health(session)
        assert (health.last_status, health.last_error, health.entries) == ("20", None, 2)

    with jetforce(directory, second_cert, port):
        summary = poller.run(every=True)
        assert [failure.error for failure in summary.failures] == [
            f"certificate for {host} changed (known {first_cert.fingerprint}, "
            f"now {second_cert.fingerprint}); run `digest trust {host}` to accept it"
        ]
        with store.reading() as session:
            [health] = feed_health(session)
            assert health.last_error == summary.failures[0].error
            assert health.failures == 1
            assert not health.disabled
            assert known_hosts(session) == {host: first_cert.fingerprint}

        with store.writing() as session:
            assert trust_host(session, host)
        summary = poller.run(every=True)

    assert summary.failures == []
    assert summary.new_entries == 0
    with store.reading() as session:
        assert known_hosts(session) == {host: second_cert.fingerprint}
        [health] = feed_health(session)
        assert (health.last_error, health.failures, health.entries) == (None, 0, 2)


def test_poller_disables_a_gone_capsule(tmp_path: Path, store: Store) -> None:
    certificate = make_certificate(tmp_path, "server")
    with gemini_server_thread({"/": reply("52 moved away")}, certificate) as base:
        add_feeds(store, [FeedSettings(url=base + "/", stream="gemini-links")], NOW)
        summary = Poller(store, FetchSettings(allow_private_networks=True)).run(every=True)

    assert [failure.error for failure in summary.failures] == ["Gemini 52 gone: moved away"]
    with store.reading() as session:
        [health] = feed_health(session)
        assert health.disabled
        assert health.last_status == "52"
        assert health.disabled_reason is not None
        assert health.disabled_reason.startswith("gone (Gemini 52 gone: moved away) since ")
