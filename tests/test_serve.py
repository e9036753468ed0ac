"""`digest serve` for real: a subprocess serves a rendered public/ over HTTP and Gemini on
127.0.0.1, and real clients read it: urllib/http.client, newsboat (conditional GET), agunua (a
Gemini client) and a raw TLS socket. Shutdown by signal, certificate reuse and bad input too."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from digest.render import render_site
from digest.serve import Redirect, ensure_certificate, parse_listen, resolve_path, serve
from tests.gemini_servers import make_certificate
from tests.site_content import sample_content
from tests.validators import check_gemtext, newsboat_reload, require_tool

# End to end: a `digest serve` process, real clients and real timeouts.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECRET = "top secret, outside the site"
START_TIMEOUT = 60  # seconds: generous, a loaded CI machine imports slowly
STOP_TIMEOUT = 20

# Runs serve() in a fresh interpreter, as the CLI will: serve installs twisted's reactor.
SERVE_SCRIPT = """
import json, logging, sys
from pathlib import Path
from digest.serve import Limits, parse_listen, serve
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
a = json.loads(sys.argv[1])
def path(key):
    return None if a[key] is None else Path(a[key])
serve(
    Path(a["root"]),
    http=None if a["http"] is None else parse_listen(a["http"]),
    gemini=None if a["gemini"] is None else parse_listen(a["gemini"]),
    hostname=a["hostname"],
    cert=path("cert"),
    key=path("key"),
    state_dir=Path(a["state"]),
    limits=None if a["limits"] is None else Limits(**a["limits"]),
)
print("serve returned", file=sys.stderr)
"""
HTTP_LINE = re.compile(r"HTTP listening on http://127\.0\.0\.1:(\d+)/")
GEMINI_LINE = re.compile(r"Gemini listening on 127\.0\.0\.1:(\d+) ")


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    log: Path
    http_port: int | None
    gemini_port: int | None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def gemini_url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"gemini://{host}:{self.gemini_port}{path}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not stop on {sig!r}:\n{self.log_text()}") from None


def start_serve(
    tmp: Path,
    root: Path,
    *,
    http: bool = True,
    gemini: bool = True,
    hostname: str = "127.0.0.1",
    state: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    http_listen: str = "127.0.0.1:0",
    gemini_listen: str = "127.0.0.1:0",
    limits: dict[str, float] | None = None,
) -> Served:
    """Start serve on free ports (port 0) and wait for the startup lines naming them."""
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"serve-{time.monotonic_ns()}.log"
    args = {
        "root": str(root),
        "http": http_listen if http else None,
        "gemini": gemini_listen if gemini else None,
        "hostname": hostname,
        "cert": None if cert is None else str(cert),
        "key": None if key is None else str(key),
        "state": str(state or tmp / "state"),
        "limits": limits,
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE_SCRIPT, json.dumps(args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
        )
    served = Served(process, log, None, None)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = served.log_text()
        http_match, gemini_match = HTTP_LINE.search(text), GEMINI_LINE.search(text)
        if (http_match or not http) and (gemini_match or not gemini):
            served.http_port = int(http_match.group(1)) if http_match else None
            served.gemini_port = int(gemini_match.group(1)) if gemini_match else None
            return served
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{text}")
        time.sleep(0.05)
    served.stop()
    raise AssertionError(f"serve did not start:\n{served.log_text()}")


def build_site(base: Path) -> Path:
    """A rendered public/ plus the traps a server must not fall into."""
    root = base / "public"
    render_site(sample_content(), root)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "index.html").write_text(SECRET)
    (outside / "index.gmi").write_text(SECRET)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escaped-dir").symlink_to(outside, target_is_directory=True)
    (root / "inside-link.gmi").symlink_to(root / "index.gmi")  # stays inside: served
    (root / ".hidden").write_text(SECRET)
    (root / ".feed.xml.abc.tmp").write_text(SECRET)  # what a render in progress leaves
    (root / "empty").mkdir()
    (root / "sitemap.xml").write_text('<?xml version="1.0"?><urlset/>\n')
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Served]]:
    base = tmp_path_factory.mktemp("serve")
    root = build_site(base)
    served = start_serve(base / "run", root)
    yield root, served
    assert served.stop() == 0, served.log_text()


# --- clients ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def http_request(
    served: Served, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Reply:
    """One request with the path sent exactly as given (no client-side normalizing)."""
    assert served.http_port is not None
    connection = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def gemini_request(port: int, url: str, sni: str | None = None) -> tuple[str, bytes, bytes]:
    """Raw Gemini over TLS: (status line, body, server certificate DER)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: Gemini trusts on first use
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(url.encode() + b"\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    header, _, body = data.partition(b"\r\n")
    return header.decode(), body, der


def fingerprint(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


def agunua(home: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The agunua Gemini client; its TOFU store lives in `home`."""
    program = Path(sys.executable).parent / "agunua"
    if not program.exists():
        program = Path(require_tool("agunua"))
    return subprocess.run(
        [str(program), "--verbose", "--maximum-time", "30", *extra, url],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def agunua_page(stdout: str) -> list[str]:
    """The page's lines as agunua --verbose printed them: after its "Media type" line, and
    without the empty line it adds at the end (it reads line by line and ends each one)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Media type is "))
    page = lines[start + 1 :]
    while page and not page[-1]:
        page.pop()
    return page


def page_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def wait_for_log(served: Served, pattern: str, count: int, start: int = 0) -> list[str]:
    """Access lines matching `pattern` after offset `start`, once `count` of them are there:
    a log line is written as the response finishes, maybe a moment after the client exits."""
    deadline = time.monotonic() + 20
    while True:
        lines = [
            line for line in served.log_text()[start:].splitlines() if re.search(pattern, line)
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


# --- parse_listen and resolve_path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:1965", ("::1", 1965)),
        ("[::]:1965", ("::", 1965)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost:0", ("localhost", 0)),
        (" 10.0.0.2:65535 ", ("10.0.0.2", 65535)),
    ],
)
def test_parse_listen_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["8080", "127.0.0.1", "::1:1965", "[::1]", "[nothex]:80", "host:65536", "host:x", ""]
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_resolve_path_maps_urls_to_files_inside_only(tmp_path: Path) -> None:
    root = build_site(tmp_path)
    assert resolve_path(root, "/", "index.gmi") == root / "index.gmi"
    assert resolve_path(root, "/links/", "index.html") == root / "links" / "index.html"
    assert resolve_path(root, "/links", "index.html") is Redirect.ADD_SLASH
    assert resolve_path(root, "/inside-link.gmi", "index.gmi") == root / "index.gmi"
    for bad in [
        "/../outside/secret.txt",
        "/links/../../outside/secret.txt",
        "/escape.txt",
        "/escaped-dir/",
        "/escaped-dir/secret.txt",
        "/.hidden",
        "/.feed.xml.abc.tmp",
        "/empty/",
        "/links/2025/03/28/",  # a folder without an index page
        "/index.gmi/",
        "//index.gmi",
        "/nope.gmi",
        "/index.gmi\x00.txt",
        "relative.gmi",
        "/" + "x" * 5000,
    ]:
        assert resolve_path(root, bad, "index.gmi") is None, bad


# --- HTTP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "file", "mime"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/index.html", "index.html", "text/html; charset=utf-8"),
        ("/links/", "links/index.html", "text/html; charset=utf-8"),
        ("/links/2025/03/28/1.html", "links/2025/03/28/1.html", "text/html; charset=utf-8"),
        ("/index.gmi", "index.gmi", "text/gemini; charset=utf-8"),
        ("/links/2025/03/28/2.gmi", "links/2025/03/28/2.gmi", "text/gemini; charset=utf-8"),
        ("/feed.xml", "feed.xml", "application/atom+xml; charset=utf-8"),
        ("/gemini-links/feed.xml", "gemini-links/feed.xml", "application/atom+xml; charset=utf-8"),
        ("/sitemap.xml", "sitemap.xml", "application/xml; charset=utf-8"),
        ("/style.css", "style.css", "text/css; charset=utf-8"),
    ],
)
def test_http_serves_files_with_their_content_type(
    site: tuple[Path, Served], path: str, file: str, mime: str
) -> None:
    root, served = site
    reply = http_request(served, path)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == mime
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.body == (root / file).read_bytes()


def test_http_directory_without_slash_redirects_keeping_the_query(
    site: tuple[Path, Served],
) -> None:
    _, served = site
    reply = http_request(served, "/links?x=1")
    assert reply.status == 301
    assert reply.headers["Location"] == "/links/?x=1"


def test_feed_reader_conditional_get_gets_304(site: tuple[Path, Served]) -> None:
    root, served = site
    first = http_request(served, "/feed.xml")
    assert first.status == 200
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag and not etag.startswith("W/"), "a strong ETag"
    assert last_modified

    both = http_request(
        served, "/feed.xml", headers={"If-None-Match": etag, "If-Modified-Since": last_modified}
    )
    assert (both.status, both.body) == (304, b"")
    assert both.headers["ETag"] == etag
    only_etag = http_request(served, "/feed.xml", headers={"If-None-Match": etag})
    assert only_etag.status == 304
    only_date = http_request(served, "/feed.xml", headers={"If-Modified-Since": last_modified})
    assert only_date.status == 304

    stale = http_request(served, "/feed.xml", headers={"If-None-Match": '"not-it"'})
    assert (stale.status, stale.body) == (200, (root / "feed.xml").read_bytes())
    long_ago = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    old = http_request(served, "/feed.xml", headers={"If-Modified-Since": long_ago})
    assert old.status == 200


def test_changed_file_gets_a_new_etag_and_a_200(site: tuple[Path, Served]) -> None:
    root, served = site
    page = root / "changing.txt"
    page.write_text("first\n")
    first = http_request(served, "/changing.txt")
    assert (first.status, first.body) == (200, b"first\n")
    page.write_text("second, longer\n")
    # A later mtime too, so neither validator can match by chance of a coarse clock.
    later = time.time() + 10
    os.utime(page, (later, later))
    second = http_request(served, "/changing.txt", headers={"If-None-Match": first.headers["ETag"]})
    assert (second.status, second.body) == (200, b"second, longer\n")
    assert second.headers["ETag"] != first.headers["ETag"]


def test_head_has_headers_and_no_body(site: tuple[Path, Served]) -> None:
    root, served = site
    reply = http_request(served, "/links/index.gmi", method="HEAD")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["Content-Type"] == "text/gemini; charset=utf-8"
    assert int(reply.headers["Content-Length"]) == (root / "links" / "index.gmi").stat().st_size
    assert reply.headers["ETag"] and reply.headers["Last-Modified"]


def test_other_methods_are_refused(site: tuple[Path, Served]) -> None:
    _, served = site
    assert http_request(served, "/feed.xml", method="POST").status == 405
    assert http_request(served, "/feed.xml", method="DELETE").status == 405


@pytest.mark.parametrize(
    "path",
    [
        "/nope.html",
        "/links/2025/03/28/9.html",
        "/../outside/secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/outside/secret.txt",
        "/links/%2E%2E/%2e%2e/outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/%252e%252e/outside/secret.txt",
        "/escape.txt",
        "/escaped-dir/",
        "/escaped-dir/secret.txt",
        "/.hidden",
        "/.feed.xml.abc.tmp",
        "/empty/",
        "/links/2025/03/28/",  # a folder without an index page
        "/index.html/",
        "/index.html%00.txt",
    ],
)
def test_http_missing_hidden_and_outside_paths_are_not_served(
    site: tuple[Path, Served], path: str
) -> None:
    _, served = site
    for method in ("GET", "HEAD"):
        reply = http_request(served, path, method=method)
        assert reply.status in (403, 404), (method, path, reply.status)
        assert SECRET.encode() not in reply.body
        assert b"<a href" not in reply.body  # never a listing


def test_http_double_slash_is_no_open_redirect(site: tuple[Path, Served]) -> None:
    _, served = site
    reply = http_request(served, "//example.org")
    assert reply.status == 404
    assert "Location" not in reply.headers


def test_newsboat_reload_gets_304_once_it_has_the_validators(
    site: tuple[Path, Served], tmp_path: Path
) -> None:
    _, served = site
    url = f"{served.http_base}/links/feed.xml"
    start = len(served.log_text())

    # newsboat 2.21 stores a new feed's ETag and Last-Modified before it inserts the feed's
    # row, so the first reload's validators are lost (its debug log shows the UPDATE ahead of
    # the INSERT): the second reload fetches in full and keeps them, the third asks with them.
    for _ in range(3):
        newsboat_reload(tmp_path, [url])
    pattern = r'"GET /links/feed\.xml HTTP/1\.1" \d{3} .*newsboat'
    lines = wait_for_log(served, pattern, 3, start)
    statuses = [line.split('HTTP/1.1" ')[1][:3] for line in lines]
    assert len(statuses) == 3, "\n".join(lines)
    assert statuses[0] == "200" and statuses[-1] == "304", "\n".join(lines)
    current = http_request(served, "/links/feed.xml", method="HEAD").headers["ETag"]
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("SELECT etag FROM rss_feed").fetchall() == [(current,)]
        assert db.execute("SELECT count(*) FROM rss_item").fetchone() == (3,)


def test_the_reader_library_gets_304_on_its_second_update(
    site: tuple[Path, Served], tmp_path: Path
) -> None:
    from reader import make_reader  # lemon24/reader: a feed reader library, as a subscriber

    _, served = site
    url = f"{served.http_base}/links/feed.xml"
    start = len(served.log_text())
    subscriber = make_reader(str(tmp_path / "reader.sqlite"))
    try:
        subscriber.add_feed(url)
        subscriber.update_feeds(scheduled=False)
        titles = {entry.title for entry in subscriber.get_entries()}
        subscriber.update_feeds(scheduled=False)
    finally:
        subscriber.close()
    lines = wait_for_log(served, r'"GET /links/feed\.xml HTTP/1\.1" \d{3}', 2, start)
    assert [line.split('HTTP/1.1" ')[1][:3] for line in lines] == ["200", "304"], lines
    assert titles and all(title and title.startswith("Links ") for title in titles)


# --- Gemini -----------------------------------------------------------------------------------


def test_agunua_reads_the_capsule_index(site: tuple[Path, Served], tmp_path: Path) -> None:
    root, served = site
    for path in ("/index.gmi", "/", ""):
        result = agunua(tmp_path, served.gemini_url(path))
        assert result.returncode == 0, result.stderr
        assert "Media type is text/gemini" in result.stdout
        assert agunua_page(result.stdout) == page_lines(root / "index.gmi")
    lines = check_gemtext((root / "index.gmi").read_text())
    links = [(line.url, line.label) for line in lines if line.kind == "link"]
    assert (
        "gemini://links.example.org/links/2025/06/02/1.gmi",
        "2025-06-02 Links 02/06/2025: Summer",
    ) in links


def test_agunua_reads_an_edition_and_a_stream_index(
    site: tuple[Path, Served], tmp_path: Path
) -> None:
    root, served = site
    edition = agunua(tmp_path, served.gemini_url("/links/2025/03/28/2.gmi"))
    assert edition.returncode == 0, edition.stderr
    assert "Media type is text/gemini" in edition.stdout
    page = agunua_page(edition.stdout)
    assert page == page_lines(root / "links/2025/03/28/2.gmi")
    assert "=> https://a.example/ A ☛ B" in page

    # "/links" answers 31 and agunua follows it to the stream's gemsub index.
    stream = agunua(tmp_path, served.gemini_url("/links"))
    assert stream.returncode == 0, stream.stderr
    page = agunua_page(stream.stdout)
    assert page == page_lines(root / "links/index.gmi")
    dated = [line for line in page if re.fullmatch(r"=> gemini://\S+ \d{4}-\d{2}-\d{2} .+", line)]
    assert dated == [
        "=> gemini://links.example.org/links/2025/06/02/1.gmi 2025-06-02 Links 02/06/2025: Summer",
        "=> gemini://links.example.org/links/2025/03/28/2.gmi 2025-03-28 Links 28/03/2025: Evening",
        "=> gemini://links.example.org/links/2025/03/28/1.gmi 2025-03-28 "
        "Links 28/03/2025: Science <b>Wins</b>, Security Loses",
    ]


def test_agunua_reports_a_missing_page(site: tuple[Path, Served], tmp_path: Path) -> None:
    _, served = site
    result = agunua(tmp_path, served.gemini_url("/nope.gmi"))
    assert result.returncode == 1
    assert "Not found" in result.stderr


def test_raw_gemini_status_lines(site: tuple[Path, Served]) -> None:
    root, served = site
    assert served.gemini_port is not None
    port = served.gemini_port
    header, body, _ = gemini_request(port, served.gemini_url("/links/2025/03/28/1.gmi"))
    assert header == "20 text/gemini; charset=utf-8"
    assert body == (root / "links/2025/03/28/1.gmi").read_bytes()
    header, body, _ = gemini_request(port, served.gemini_url("/links/"))
    assert (header, body) == (
        "20 text/gemini; charset=utf-8",
        (root / "links/index.gmi").read_bytes(),
    )
    header, body, _ = gemini_request(port, served.gemini_url("/feed.xml"))
    assert header == "20 application/atom+xml; charset=utf-8"
    header, body, _ = gemini_request(port, served.gemini_url("/links?q=1"))
    assert (header, body) == (f"31 {served.gemini_url('/links/')}", b"")


@pytest.mark.parametrize(
    "path",
    [
        "/nope.gmi",
        "/../outside/secret.txt",
        "/links/../../outside/index.gmi",
        "/%2e%2e/outside/secret.txt",
        "/escape.txt",
        "/escaped-dir/",
        "/escaped-dir/index.gmi",
        "/.hidden",
        "/empty/",
        "/links/2025/03/28/",  # a folder without an index page
    ],
)
def test_raw_gemini_missing_and_outside_paths_get_51(site: tuple[Path, Served], path: str) -> None:
    _, served = site
    assert served.gemini_port is not None
    header, body, _ = gemini_request(served.gemini_port, served.gemini_url(path))
    assert header.startswith("51 "), header
    assert body == b""


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("gemini://other.example/index.gmi", "53"),
        ("https://127.0.0.1/index.gmi", "53"),
        ("gemini://user@127.0.0.1/index.gmi", "59"),
        ("gemini://127.0.0.1:notaport/", "59"),
        ("/index.gmi", "59"),
        ("gemini://127.0.0.1/" + "x" * 1100, "59"),
    ],
)
def test_raw_gemini_refuses_other_hosts_and_bad_requests(
    site: tuple[Path, Served], url: str, status: str
) -> None:
    _, served = site
    assert served.gemini_port is not None
    header, body, _ = gemini_request(served.gemini_port, url)
    assert header.split(" ")[0] == status, header
    assert body == b""


# --- certificates, signals, startup errors ------------------------------------------------------


def test_generated_certificate_is_reused_and_names_the_host(tmp_path: Path) -> None:
    root = build_site(tmp_path)
    state, home = tmp_path / "state", tmp_path / "home"
    url = "gemini://capsule.example/index.gmi"

    port = 0

    def run_once() -> tuple[str, subprocess.CompletedProcess[str]]:
        nonlocal port
        # The same port each time: agunua pins a key per host and port.
        served = start_serve(
            tmp_path / "run",
            root,
            http=False,
            hostname="capsule.example",
            state=state,
            gemini_listen=f"127.0.0.1:{port}",
        )
        try:
            assert served.gemini_port is not None
            port = served.gemini_port
            header, _, der = gemini_request(port, url, sni="capsule.example")
            assert header.startswith("20 ")
            # agunua pins the key it saw first (TOFU, in `home`): a new key fails there.
            client_url = served.gemini_url("/index.gmi", host="capsule.example")
            client = agunua(home, client_url, "--connect-to", "127.0.0.1")
            return fingerprint(der), client
        finally:
            assert served.stop() == 0

    first, client = run_once()
    assert client.returncode == 0, client.stderr
    files = list(state.iterdir())
    assert [path.name for path in files] == ["gemini-capsule.example.pem"]
    assert files[0].stat().st_mode & 0o077 == 0, "the key file is private"
    cert = x509.load_pem_x509_certificate(files[0].read_bytes())
    assert cert.fingerprint(hashes.SHA256()).hex() == first
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["capsule.example"]
    assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=365 * 50)

    second, client = run_once()
    assert second == first
    assert client.returncode == 0, client.stderr

    # Control: without the stored file a new key is made, and the pinning client objects.
    files[0].unlink()
    third, client = run_once()
    assert third != first
    assert client.returncode != 0
    assert "Former public key" in client.stderr + client.stdout


def test_ip_hostname_gets_an_ip_san(tmp_path: Path) -> None:
    path = ensure_certificate(tmp_path, "127.0.0.1")
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ensure_certificate(tmp_path, "127.0.0.1").read_bytes() == path.read_bytes()


def test_given_certificate_and_key_are_used(tmp_path: Path) -> None:
    root = build_site(tmp_path)
    given = make_certificate(tmp_path, "given")
    cert = x509.load_pem_x509_certificate(given.certfile.read_bytes())
    served = start_serve(tmp_path / "run", root, http=False, cert=given.certfile, key=given.keyfile)
    try:
        assert served.gemini_port is not None
        header, _, der = gemini_request(served.gemini_port, served.gemini_url("/"))
        assert header.startswith("20 ")
        assert fingerprint(der) == cert.fingerprint(hashes.SHA256()).hex()
    finally:
        assert served.stop() == 0
    assert not (tmp_path / "run" / "state").exists(), "nothing generated"


@pytest.mark.parametrize(
    ("sig", "http", "gemini"),
    [
        (signal.SIGTERM, True, True),
        (signal.SIGINT, True, True),
        (signal.SIGTERM, True, False),
        (signal.SIGTERM, False, True),
    ],
)
def test_signal_stops_serve_cleanly(tmp_path: Path, sig: int, http: bool, gemini: bool) -> None:
    root = build_site(tmp_path)
    served = start_serve(tmp_path / "run", root, http=http, gemini=gemini)
    ports = [port for port in (served.http_port, served.gemini_port) if port is not None]
    # An open idle keep-alive connection must not hold the shutdown up.
    idle = socket.create_connection(("127.0.0.1", ports[0]), timeout=10)
    try:
        if served.http_port is not None:
            assert http_request(served, "/").status == 200
        assert served.stop(sig) == 0, served.log_text()
    finally:
        idle.close()
    assert "serve returned" in served.log_text()
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_port_in_use_fails_at_startup(tmp_path: Path) -> None:
    root = build_site(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match="exited with 1") as failure:
            start_serve(tmp_path / "run", root, gemini=False, http_listen=f"127.0.0.1:{port}")
    assert "address already in use" in str(failure.value).lower()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"http": None, "gemini": None}, ValueError),
        ({"key": Path("k.pem")}, ValueError),
        ({"output_dir": Path("/nonexistent/public")}, FileNotFoundError),
    ],
)
def test_bad_arguments_fail_before_anything_starts(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception]
) -> None:
    arguments: dict[str, object] = {
        "output_dir": tmp_path,
        "http": ("127.0.0.1", 0),
        "gemini": None,
        "hostname": "localhost",
        "cert": None,
        "key": None,
        "state_dir": tmp_path / "state",
        **kwargs,
    }
    with pytest.raises(error):
        serve(**arguments)  # type: ignore[arg-type]


# --- half-open connections, the connection cap, malformed Gemini requests (issue 16, item 7) ---

# Short limits so the tests wait seconds, not minutes; bounds below are generous on purpose.
SHORT = {"header_timeout": 1.0, "idle_timeout": 30.0}
CLOSE_BOUND = 15.0  # seconds: far above the 1 s timeout, far below "forever"


def tls_client() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_closed(
    sock: socket.socket | ssl.SSLSocket, bound: float = CLOSE_BOUND, since: float | None = None
) -> float:
    """Seconds until the server closed `sock` (EOF or reset), from `since` (a time.monotonic()
    taken before the connection was made: the server's clock runs from then) or from now;
    fails `bound` seconds past now."""
    start = time.monotonic()
    sock.settimeout(bound)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {bound} s") from None
    except (ConnectionError, ssl.SSLError):
        pass  # aborted: a reset, or a TLS stream cut short
    return time.monotonic() - (start if since is None else since)


def test_http_half_sent_headers_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    served = start_serve(tmp_path / "run", build_site(tmp_path), gemini=False, limits=SHORT)
    try:
        assert served.http_port is not None
        address = ("127.0.0.1", served.http_port)
        opened = time.monotonic()
        with socket.create_connection(address, timeout=10) as silent:
            assert wait_closed(silent, since=opened) >= 0.5  # nothing sent at all
        opened = time.monotonic()
        with socket.create_connection(address, timeout=10) as half:
            half.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n")  # no blank line
            assert wait_closed(half, since=opened) >= 0.5
        # A byte now and then does not keep a request alive: the clock runs from its start.
        with socket.create_connection(address, timeout=10) as drip:
            start, closed = time.monotonic(), False
            while time.monotonic() - start < CLOSE_BOUND and not closed:
                try:
                    drip.sendall(b"X")
                except OSError:
                    closed = True
                time.sleep(0.2)
            assert closed or wait_closed(drip, 1) >= 0
        # A whole request is answered; the keep-alive connection then waits past the header
        # timeout (idle, not half-sent) and still serves a second request.
        connection = http.client.HTTPConnection(*address, timeout=10)
        connection.request("GET", "/index.html")
        assert connection.getresponse().read()
        time.sleep(2.5)
        connection.request("GET", "/feed.xml")
        response = connection.getresponse()
        assert (response.status, bool(response.read())) == (200, True)
        connection.close()
        assert http_request(served, "/").status == 200
    finally:
        assert served.stop() == 0, served.log_text()


def test_http_idle_keep_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    limits = {"header_timeout": 1.0, "idle_timeout": 2.0}
    served = start_serve(tmp_path / "run", build_site(tmp_path), gemini=False, limits=limits)
    try:
        assert served.http_port is not None
        with socket.create_connection(("127.0.0.1", served.http_port), timeout=10) as sock:
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            wait_closed(sock)
    finally:
        assert served.stop() == 0, served.log_text()


def test_gemini_half_sent_request_line_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    served = start_serve(tmp_path / "run", build_site(tmp_path), http=False, limits=SHORT)
    try:
        assert served.gemini_port is not None
        address = ("127.0.0.1", served.gemini_port)
        opened = time.monotonic()
        with socket.create_connection(address, timeout=10) as raw:  # not even a TLS handshake
            assert wait_closed(raw, since=opened) >= 0.5
        # Timed from before the connection: on a busy machine the handshake can take half of
        # the 1 s timeout, which runs from the connection's start.
        opened = time.monotonic()
        with (
            socket.create_connection(address, timeout=10) as raw,
            tls_client().wrap_socket(raw) as tls,
        ):
            tls.sendall(served.gemini_url("/index.gmi").encode())  # no CRLF
            assert wait_closed(tls, since=opened) >= 0.5
        header, _, _ = gemini_request(served.gemini_port, served.gemini_url("/"))
        assert header.startswith("20 ")
    finally:
        assert served.stop() == 0, served.log_text()
    assert "Traceback" not in served.log_text()


def test_connections_past_the_cap_are_closed_at_once_and_logged_once(tmp_path: Path) -> None:
    cap = 6
    limits = {"header_timeout": 60.0, "idle_timeout": 60.0, "max_connections": cap}
    served = start_serve(tmp_path / "run", build_site(tmp_path), limits=limits)
    sockets: list[socket.socket] = []
    try:
        assert served.http_port is not None and served.gemini_port is not None
        for round_ in range(2):  # the second round shows the log again only after recovery
            for i in range(4 * cap):
                port = served.http_port if i % 2 else served.gemini_port
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            # The refused ones are closed at once; `cap` stay open (their timeouts are long).
            deadline = time.monotonic() + 20
            open_ = list(sockets)
            while len(open_) > cap and time.monotonic() < deadline:
                for sock in list(open_):
                    sock.settimeout(0.05)
                    try:
                        if sock.recv(1) == b"":
                            open_.remove(sock)
                    except TimeoutError:
                        pass
                    except OSError:
                        open_.remove(sock)
            assert len(open_) == cap, f"round {round_}: {len(open_)} open"
            for sock in sockets:
                sock.close()
            sockets.clear()
            wait_for_log(served, r"accepting connections again", round_ + 1)
            # Normal requests are answered again on both servers.
            assert http_request(served, "/").status == 200
            header, _, _ = gemini_request(served.gemini_port, served.gemini_url("/"))
            assert header.startswith("20 ")
        text = served.log_text()
        reached = re.findall(r"connection limit reached \(6\); refusing new connections", text)
        assert len(reached) == 2, text
        again = re.findall(r"accepting connections again \(\d+ open\); refused (\d+)", text)
        assert [int(n) for n in again] == [3 * cap, 3 * cap], text
    finally:
        for sock in sockets:
            sock.close()
        assert served.stop() == 0, served.log_text()


@pytest.mark.parametrize(
    "line",
    [
        b"gemini://127.0.0.1/" + b"x" * 1100,  # over the spec's 1024 bytes
        b"gemini://127.0.0.1/" + b"x" * 20000,  # over jetforce's line buffer too
        b"gemini://127.0.0.1/caf\xe9.gmi",  # Latin-1, not UTF-8
        b"\xff\xfe" + "gemini://127.0.0.1/".encode("utf-16-le"),
        b"/index.gmi",  # relative
        b"",
    ],
)
def test_malformed_gemini_request_gets_59_and_one_log_line(
    site: tuple[Path, Served], line: bytes
) -> None:
    _, served = site
    assert served.gemini_port is not None
    before = served.log_text()
    with (
        socket.create_connection(("127.0.0.1", served.gemini_port), timeout=30) as raw,
        tls_client().wrap_socket(raw) as tls,
    ):
        tls.sendall(line + b"\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"59 ") and data.endswith(b"\r\n") and data.count(b"\r\n") == 1, data
    lines = wait_for_log(served, r"digest\.serve\.gemini .* 59 ", 1, len(before))
    # A good request after it, logged once the server is done with the bad one's connection
    # (one event loop, in order): anything the bad one logged late would be before it.
    header, _, _ = gemini_request(served.gemini_port, served.gemini_url("/"))
    assert header.startswith("20 ")
    lines += wait_for_log(served, r"digest\.serve\.gemini .* 20 ", 1, len(before))
    new = served.log_text()[len(before) :].splitlines()
    assert new == lines and len(lines) == 2, new
    assert "Traceback" not in served.log_text()
