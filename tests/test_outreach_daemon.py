"""The daemon reaches out after each closing: every edition it closes is mailed once to each
recipient, and the hubs hear of every feed it changes (real SMTP server and hub on 127.0.0.1)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.daemon_harness import FeedServer, Site, rss_feed, terminate, wait_for
from tests.gemini_servers import free_port
from tests.outreach_servers import smtp_server, websub_hub

READERS = ("reader@example.net", "list@example.org")


@pytest.mark.slow
def test_the_daemon_mails_each_edition_once_and_pings_the_hub(
    site: Site, server: FeedServer
) -> None:
    smtp_port = free_port()
    with smtp_server(smtp_port) as mailbox, websub_hub(free_port()) as hub:
        server.add("alpha", 2)
        site.feeds = [rss_feed(server, "alpha")]
        site.write_config(
            extra_site=f"  websub_hubs: [{hub.url}]\n"
            "mail:\n"
            f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none}}\n"
            "  from: links@links.example.org\n"
        )
        text = site.config.read_text()
        site.config.write_text(
            text.replace(
                "    lookback: 36500d\n",
                f"    lookback: 36500d\n    mail_to: [{', '.join(READERS)}]\n",
            )
        )
        daemon = site.start(close_every="1s")

        wait_for(lambda: len(mailbox.received) == 2, "the first edition mailed to both")
        server.add("alpha", 1)
        wait_for(lambda: len(site.editions()) == 2, "a second edition")
        wait_for(lambda: len(mailbox.received) == 4, "the second edition mailed to both")
        wait_for(
            lambda: (
                Counter(p["hub.url"] for p in hub.pings)["https://links.example.org/links/feed.xml"]
                >= 2
            ),
            "the hub told of the stream's feed after each edition",
        )
        code, _ = terminate(daemon)

    assert code == 0, site.log(daemon)
    copies = Counter((r.recipients[0], r.message["Message-ID"]) for r in mailbox.received)
    assert sorted(copies.values()) == [1, 1, 1, 1]  # each edition once to each reader
    assert {recipient for recipient, _ in copies} == set(READERS)
    assert site.query("SELECT state, count(*) FROM mail_deliveries GROUP BY state") == [("sent", 4)]
    assert {p["hub.url"] for p in hub.pings} >= {
        "https://links.example.org/feed.xml",
        "https://links.example.org/links/feed.xml",
    }
    assert "mailed 2 messages" in site.log(daemon)
