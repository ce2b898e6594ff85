"""Tracked article links on the send side (issue 15): with NEWSLETTER_TRACK_CLICKS each link to an
article, in both parts, is the reader's own signed ``{base}/c/TOKEN``; nothing else is rewritten;
readers who turned counting off, and editors' test sends, get the plain links; the open pixel is
there only with NEWSLETTER_TRACK_OPENS. Through the real send path (the CLI, a real SQLite ledger,
the aiosmtpd server) and the web app over HTTP for the preferences box.
"""

from __future__ import annotations

import quopri
import re
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import lxml.html
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter.adapters.links import tracked_url_length
from newsletter.adapters.message import (
    ListIdentity,
    MessageTemplate,
    Recipient,
    Sender,
    _qp_url,
)
from newsletter.adapters.render import (
    BUDGET_BYTES,
    OPEN_SLOT,
    PREFERENCES_SLOT,
    UNSUBSCRIBE_SLOT,
    Renderer,
    Tracking,
    article_slot,
)
from newsletter.adapters.store import open_store
from newsletter.adapters.tokens import ClickSigner, InvalidToken, Purpose
from newsletter.config import load_settings
from newsletter.domain import Article
from newsletter.domain.curation import article_ref
from newsletter.services.check import check_tracking
from tests.support import SAMPLE_DATE, TEST_SECRET, base_env, invoke_cli, run_cli, send_env
from tests.test_render import golden_edition
from tests.test_send import import_subscribers
from tests.web_support import form_token_of, running_app

DAY = date.fromisoformat(SAMPLE_DATE)
BASE = "http://localhost:8000"  # send_env's NEWSLETTER_BASE_URL
CLICK = re.compile(re.escape(BASE) + r"/c/([A-Za-z0-9._-]+)")
OPEN = re.compile(re.escape(BASE) + r"/o/([A-Za-z0-9._-]+)\.gif")
SIGNER = ClickSigner(TEST_SECRET)
TRACK = {"NEWSLETTER_TRACK_CLICKS": "true"}


# -- helpers ------------------------------------------------------------------------------------


def parts(message: EmailMessage) -> tuple[str, str]:
    """The decoded text and HTML parts of a message."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def by_recipient(server) -> dict[str, EmailMessage]:
    return {m["To"].addresses[0].addr_spec: m for m in server.messages()}


def frozen(env: dict[str, str]) -> list[Article]:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        articles = store.frozen_articles(DAY)
    assert articles
    return articles


def subscriber_id(env: dict[str, str], email: str) -> int:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        found = store.find_by_email(email)
    assert found is not None
    return found.id


def send(tmp_path: Path, env: dict[str, str], *extra: str) -> None:
    proc = invoke_cli("send", "--date", SAMPLE_DATE, *extra, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def article_anchors(html: str) -> list[tuple[str, str]]:
    """(class of the anchor or of its picture, href) of every link to an article in the HTML:
    the headline, "read more", the lead picture and the thumbnails."""
    tree = lxml.html.document_fromstring(html)
    found = []
    for anchor in tree.iter("a"):
        kind = anchor.get("class") or ""
        picture = anchor.find("img")
        if picture is not None and picture.get("class") in ("lead-image", "thumb"):
            kind = picture.get("class")
        if kind in ("article-link", "read-more-link", "lead-image", "thumb"):
            found.append((kind, anchor.get("href")))
    return found


def assert_tracked(message: EmailMessage, articles: list[Article], reader: int) -> set[str]:
    """Every article link of ``message`` in both parts is ``{BASE}/c/TOKEN`` for this edition,
    this reader and the right article; no plain article URL is left. Returns the refs linked."""
    text, html = parts(message)
    ref_of_title = {a.title: article_ref(a.uid) for a in articles}
    refs = {article_ref(a.uid) for a in articles}
    anchors = article_anchors(html)
    assert {kind for kind, _ in anchors} >= {"article-link", "read-more-link", "lead-image"}
    tree = lxml.html.document_fromstring(html)
    url_of_ref: dict[str, str] = {}
    for kind, href in anchors:
        found = CLICK.fullmatch(href)
        assert found, (kind, href)
        claim = SIGNER.read_click(found.group(1))
        assert (claim.edition_date, claim.subscriber_id) == (DAY, reader)
        assert claim.article_ref in refs
        # one URL per article: every link to it carries the same token
        assert url_of_ref.setdefault(claim.article_ref, href) == href
    for headline in tree.find_class("article-link"):
        claim = SIGNER.read_click(CLICK.fullmatch(headline.get("href")).group(1))
        assert claim.article_ref == ref_of_title[headline.text_content()]
    # The text part: each article's URL line is the same tracked URL as in the HTML.
    text_urls = {m.group(0) for m in CLICK.finditer(text)}
    assert text_urls == set(url_of_ref.values())
    for article in articles:
        assert article.link not in text and f'href="{article.link}"' not in html
    return set(url_of_ref)


def assert_plain(message: EmailMessage, articles: list[Article]) -> None:
    """No tracked link, no pixel: the article links go straight to the site."""
    text, html = parts(message)
    assert "/c/" not in text + html and "/o/" not in text + html and "__NL_" not in text + html
    links = {a.link for a in articles}
    hrefs = [href for _, href in article_anchors(html)]
    assert hrefs and all(href in links for href in hrefs)
    assert any(link in text for link in links)


def untouched_links(message: EmailMessage) -> None:
    """Unsubscribe, preferences, web version, sign-up and site links are never rewritten."""
    text, html = parts(message)
    tree = lxml.html.document_fromstring(html)
    footer = [a.get("href") for a in tree.find_class("footer-link")]
    assert any(h.startswith(f"{BASE}/unsubscribe/") for h in footer)
    assert any(h.startswith(f"{BASE}/preferences/") for h in footer)
    assert f"{BASE}/archive/{SAMPLE_DATE}" in footer and f"{BASE}/subscribe" in footer
    assert [a.get("href") for a in tree.find_class("topbar-link")] == [
        f"{BASE}/archive/{SAMPLE_DATE}"
    ]
    assert [a.get("href") for a in tree.find_class("masthead-link")] == ["https://www.example.com"]
    assert re.search(rf"^{re.escape(BASE)}/unsubscribe/\S+$", text, re.M)
    assert re.search(rf"^{re.escape(BASE)}/preferences/\S+$", text, re.M)
    assert str(message["List-Unsubscribe"]).startswith(f"<{BASE}/unsubscribe/")


# -- the send path ------------------------------------------------------------------------------


def test_tracked_send_rewrites_each_article_link_in_both_parts_and_nothing_else(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port, **TRACK)
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;Aïcha;", "sport@exemple.ma;Karim;Sport"])
    send(tmp_path, env)
    articles = frozen(env)
    messages = by_recipient(smtp_server)
    everything = assert_tracked(
        messages["aicha@exemple.ma"], articles, subscriber_id(env, "aicha@exemple.ma")
    )
    # Every article of the edition is linked, each through its own token.
    assert everything == {article_ref(a.uid) for a in articles}
    sport = messages["sport@exemple.ma"]
    sport_refs = assert_tracked(sport, articles, subscriber_id(env, "sport@exemple.ma"))
    assert sport_refs and sport_refs < everything  # the Sport variant: its articles only
    for message in messages.values():
        untouched_links(message)
        assert "/o/" not in parts(message)[1]  # no pixel without NEWSLETTER_TRACK_OPENS
    # Two readers' tokens for one article differ, and a token cut or altered reads as nothing.
    one = CLICK.search(parts(sport)[0]).group(1)
    for broken in (one[:-1], one.replace(".", ".0", 1), one + "x"):
        with pytest.raises(InvalidToken):
            SIGNER.read_click(broken)


def test_tracking_is_off_by_default_plain_links_and_no_pixel(tmp_path: Path, smtp_server) -> None:
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;Aïcha;"])
    send(tmp_path, env)
    [message] = smtp_server.messages()
    assert_plain(message, frozen(env))
    untouched_links(message)
    assert "<img" not in parts(message)[1].split("</table>")[-1]  # nothing after the layout


def test_opted_out_reader_gets_plain_links_and_no_pixel_and_opens_pixel_only_for_the_others(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port, **TRACK, NEWSLETTER_TRACK_OPENS="true")
    import_subscribers(tmp_path, env, ["counted@exemple.ma;;", "private@exemple.ma;;"])
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        private = store.find_by_email("private@exemple.ma")
        assert private is not None and store.opt_out_of_clicks(private.id)
    send(tmp_path, env)
    articles = frozen(env)
    messages = by_recipient(smtp_server)
    assert_plain(messages["private@exemple.ma"], articles)
    counted = messages["counted@exemple.ma"]
    reader = subscriber_id(env, "counted@exemple.ma")
    assert_tracked(counted, articles, reader)
    text, html = parts(counted)
    # The pixel: the last element of the body, 1x1, empty alt, the reader's own open token.
    pixels = re.findall(r'<img src="([^"]+)" width="1" height="1" alt=""', html)
    assert len(pixels) == 1 and html.rstrip().endswith("</body>\n</html>")
    assert html.index(pixels[0]) > html.rindex("</table>")
    claim = SIGNER.read_open(OPEN.fullmatch(pixels[0]).group(1))
    assert (claim.edition_date, claim.subscriber_id, claim.article_ref) == (DAY, reader, "")
    assert "/o/" not in text


def test_opens_alone_add_the_pixel_and_leave_the_article_links_plain(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_TRACK_OPENS="true")
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;;"])
    send(tmp_path, env)
    [message] = smtp_server.messages()
    text, html = parts(message)
    assert "/c/" not in text + html
    assert len(OPEN.findall(html)) == 1 and not OPEN.findall(text)


def test_editors_test_send_gets_plain_links_and_no_pixel(tmp_path: Path, smtp_server) -> None:
    env = send_env(tmp_path, smtp_server.port, **TRACK, NEWSLETTER_TRACK_OPENS="true")
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;;"])
    send(tmp_path, env, "--test", "redaction@exemple.ma")
    [message] = smtp_server.messages()
    assert message["Subject"].startswith("[TEST]")
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        from newsletter.services.editions import frozen_edition

        settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
        articles = list(frozen_edition(store, settings, DAY).articles)
    assert_plain(message, articles)


def test_a_tracked_send_is_dkim_signed_and_verifies(tmp_path: Path, smtp_server) -> None:
    from tests.test_dkim import assert_signed, dkim_env, make_key

    key = make_key("ed25519")
    env = dkim_env(tmp_path, smtp_server.port, key, **TRACK, NEWSLETTER_TRACK_OPENS="true")
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;Aïcha;", "sport@exemple.ma;;Sport"])
    send(tmp_path, env)
    raws = smtp_server.raw_messages()
    assert len(raws) == 2
    for raw in raws:
        assert b"/c/" in raw
        assert_signed(raw, key)


def big_feed(path: Path, count: int) -> Path:
    """``count`` articles in four sections, each with a picture and a long text."""
    paragraph = (
        "<p>Les opérateurs économiques de la région s’interrogent sur les effets concrets des "
        "réformes annoncées, et les associations demandent un calendrier précis. </p>"
    ) * 6
    start = datetime(2026, 1, 26, 8, 0)
    items = []
    for i in range(count):
        when = (start + timedelta(minutes=20 * i)).strftime("%a, %d %b %Y %H:%M:%S +0000")
        section = ("Politique", "Économie", "Sport", "Culture")[i % 4]
        items.append(
            f"<item><title>Article numéro {i} : un titre de longueur ordinaire pour la une"
            f"</title><link>https://www.example.com/2026/01/27/article-{i}-avec-un-chemin-long/"
            f'</link><pubDate>{when}</pubDate><guid isPermaLink="false">big-{i}</guid>'
            f"<category>{section}</category>"
            f'<media:content url="https://picsum.photos/seed/a{i}/1200/675" medium="image" '
            'width="1200" height="675"/>'
            f"<description><![CDATA[{paragraph}]]></description></item>"
        )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:media="http://search.yahoo.com/mrss/"><channel><title>Big</title>'
        "<link>https://www.example.com</link>" + "".join(items) + "</channel></rss>",
        encoding="utf-8",
    )
    return path


def test_sixty_tracked_articles_stay_under_the_size_budget(tmp_path: Path, smtp_server) -> None:
    feed = big_feed(tmp_path / "big.xml", 60)
    env = send_env(
        tmp_path,
        smtp_server.port,
        **TRACK,
        NEWSLETTER_TRACK_OPENS="true",
        NEWSLETTER_SOURCES=str(feed),
        NEWSLETTER_MAX_PER_SECTION="15",
    )
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;;"])
    send(tmp_path, env)
    [message] = smtp_server.messages()
    articles = frozen(env)
    assert len(articles) == 60
    refs = assert_tracked(message, articles, subscriber_id(env, "aicha@exemple.ma"))
    html = parts(message)[1]
    # Measured with the real URLs in place, the HTML part is within the budget (Gmail clips
    # over 102,400 bytes), and the articles that fit are all there, each tracked.
    assert len(html.encode("utf-8")) <= BUDGET_BYTES
    assert len(refs) == len(lxml.html.document_fromstring(html).find_class("article-title"))
    assert len(refs) >= 20


# -- the renderer and the template --------------------------------------------------------------


def test_a_tracked_variant_differs_from_the_untracked_one_only_by_its_article_links() -> None:
    renderer = Renderer(title="La Lettre", locale="fr", tracked_url_length=90)
    edition = golden_edition()
    plain = renderer.render(edition)
    tracked = renderer.render(edition, tracking=Tracking(clicks=True, opens=True))
    assert plain.article_refs == () and not plain.open_pixel
    linked = {article_ref(a.uid): a.link for a in edition.articles if a.link.startswith("https")}
    assert set(tracked.article_refs) <= set(linked) and tracked.article_refs
    html, text = tracked.html, tracked.text
    for ref in tracked.article_refs:
        html = html.replace(article_slot(ref), linked[ref].replace("&", "&amp;"))
        text = text.replace(article_slot(ref), linked[ref])
    pixel = f'<img src="{OPEN_SLOT}" width="1" height="1" alt="" '
    assert html.count(pixel) == 1 and OPEN_SLOT not in text
    html = re.sub(rf"{re.escape(pixel)}[^>]*>\n", "", html)
    assert (html, text) == (plain.html, plain.text)
    # Measured as sent: each slot counted at the tracked URL length, the others at theirs.
    filled = (
        tracked.html.replace(UNSUBSCRIBE_SLOT, "u" * 160)
        .replace(PREFERENCES_SLOT, "p" * 160)
        .replace(OPEN_SLOT, "o" * 90)
    )
    for ref in tracked.article_refs:
        filled = filled.replace(article_slot(ref), "c" * 90)
    assert renderer.measure(tracked.html) == len(filled.encode("utf-8"))


def test_the_tracked_url_length_bounds_the_real_urls() -> None:
    longest = f"{BASE}/c/" + SIGNER.click(DAY, "f" * 6, 10**10 - 1)
    assert len(longest) <= tracked_url_length(BASE)
    assert len(f"{BASE}/o/{SIGNER.open(DAY, 10**10 - 1)}.gif") <= tracked_url_length(BASE)


def test_batch_click_tokens_are_the_single_tokens() -> None:
    refs = ["%06x" % (i * 7919) for i in range(60)]
    assert SIGNER.clicks(DAY, refs, 42) == [SIGNER.click(DAY, ref, 42) for ref in refs]
    assert SIGNER.clicks(DAY, [], 42) == []


def test_personalise_refuses_tracked_links_that_do_not_fit_the_variant() -> None:
    variant = Renderer(title="La Lettre", locale="fr").render(
        golden_edition(), tracking=Tracking(clicks=True)
    )
    identity = ListIdentity(Sender.parse("La Lettre <lettre@exemple.ma>"), "La Lettre")
    template = MessageTemplate(variant, identity, DAY)
    base = {
        "subscriber_id": 7,
        "email": "a@exemple.ma",
        "name": "",
        "unsubscribe_url": f"{BASE}/unsubscribe/x",
        "preferences_url": f"{BASE}/preferences/x",
        "unsubscribe_mailto": "mailto:u@exemple.ma",
    }
    urls = tuple(f"{BASE}/c/{ref}" for ref in template.article_refs)
    assert b"/c/" in template.personalise(Recipient(**base, article_urls=urls))
    with pytest.raises(ValueError, match="do not match"):
        template.personalise(Recipient(**base, article_urls=urls[:-1]))
    with pytest.raises(ValueError, match="not a plain URL"):
        template.personalise(Recipient(**base, article_urls=(*urls[:-1], "http://x/c/a b")))


# -- the reader's choice ------------------------------------------------------------------------


def test_store_opt_out_keeps_its_first_time_and_opt_in_clears_it(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;;"])
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        reader = store.find_by_email("aicha@exemple.ma")
        assert reader is not None and reader.clicks_opted_out_at is None
        assert store.opt_out_of_clicks(reader.id)
        first = store.get(reader.id).clicks_opted_out_at
        assert first is not None and store.get(reader.id).reader.clicks_opted_out
        assert store.opt_out_of_clicks(reader.id)
        assert store.get(reader.id).clicks_opted_out_at == first
        assert store.opt_in_to_clicks(reader.id)
        assert store.get(reader.id).clicks_opted_out_at is None
        assert not store.opt_out_of_clicks(reader.id + 1000)


BOX = 'name="count_clicks"'


def test_preferences_box_turns_click_counting_off_and_on_over_http(tmp_path: Path) -> None:
    with running_app(tmp_path, None, **TRACK) as live:
        live.add("reader@example.com")
        token = live.token(Purpose.PREFERENCES, "reader@example.com")
        with live.client() as http:
            page = http.get(f"/preferences/{token}")
            assert page.status_code == 200
            assert re.search(rf"<input [^>]*{BOX}[^>]* checked>", page.text)  # counted by default
            assert "Compter mes clics sur les articles" in page.text
            assert "30 jours" in page.text

            def save(**fields: str) -> str:
                data = {"form_token": form_token_of(page.text), "locale": "", **fields}
                saved = http.post(f"/preferences/{token}", data=data, headers={"Origin": live.url})
                assert saved.status_code == 200, saved.text[:300]
                return saved.text

            off = save()  # the box unticked: the browser sends nothing for it
            assert re.search(rf"<input [^>]*{BOX}[^>]*>", off)
            assert not re.search(rf"<input [^>]*{BOX}[^>]* checked>", off)
            found = live.store.find_by_email("reader@example.com")
            assert found is not None and found.clicks_opted_out_at is not None
            on = save(count_clicks="yes")
            assert re.search(rf"<input [^>]*{BOX}[^>]* checked>", on)
            found = live.store.find_by_email("reader@example.com")
            assert found is not None and found.clicks_opted_out_at is None


def test_preferences_box_is_hidden_and_inert_when_nothing_is_tracked(tmp_path: Path) -> None:
    with running_app(tmp_path, None) as live:
        subscriber = live.add("reader@example.com")
        live.store.opt_out_of_clicks(subscriber)
        token = live.token(Purpose.PREFERENCES, "reader@example.com")
        with live.client() as http:
            page = http.get(f"/preferences/{token}")
            assert page.status_code == 200 and BOX not in page.text
            saved = http.post(
                f"/preferences/{token}",
                data={"form_token": form_token_of(page.text), "locale": "", "count_clicks": "yes"},
                headers={"Origin": live.url},
            )
            assert saved.status_code == 200 and BOX not in saved.text
        # Saving a page that did not show the box leaves the reader's choice as it was.
        found = live.store.find_by_email("reader@example.com")
        assert found is not None and found.clicks_opted_out_at is not None


def test_preferences_box_names_opens_when_they_are_counted(tmp_path: Path) -> None:
    with running_app(tmp_path, None, NEWSLETTER_TRACK_OPENS="true") as live:
        live.add("reader@example.com")
        token = live.token(Purpose.PREFERENCES, "reader@example.com")
        with live.client() as http:
            page = http.get(f"/preferences/{token}")
        assert BOX in page.text and "l’ouverture des e-mails" in page.text


# -- newsletter check ---------------------------------------------------------------------------


def test_check_says_whether_clicks_and_opens_are_tracked(tmp_path: Path, smtp_server) -> None:
    env = send_env(tmp_path, smtp_server.port, **TRACK, NEWSLETTER_TRACK_OPENS="true")
    proc = run_cli("check", env=env, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if "tracking:" in line]
    assert lines == [
        f"ok:      tracking: clicks and opens counted: {BASE}/c/ and {BASE}/o/ must be served "
        "by `newsletter serve` (readers can turn it off on their preferences page)"
    ], proc.stdout
    off = load_settings(env_file=tmp_path / "absent.env", environ=base_env(tmp_path))
    assert str(check_tracking(off)) == (
        "ok:      tracking: off: article links go straight to the site, no pixel"
    )
    clicks = load_settings(
        env_file=tmp_path / "absent.env", environ=send_env(tmp_path, 25, **TRACK)
    )
    assert str(check_tracking(clicks)) == (
        f"ok:      tracking: clicks counted: {BASE}/c/ must be served by `newsletter serve` "
        "(readers can turn it off on their preferences page)"
    )


@given(
    st.text(alphabet=st.sampled_from("abc.=/:_-0123456789"), min_size=1, max_size=400).map(
        lambda tail: "https://lettre.exemple.ma/c/" + tail
    )
)
# A dot starting the second line (index 75), and an "=3D" escape across the first cut.
@example("https://lettre.exemple.ma/c/" + "a" * 47 + ".b")
@example("https://lettre.exemple.ma/c/" + "a" * 46 + "=b")
def test_a_url_slot_value_decodes_to_the_url_on_short_lines_none_starting_with_a_dot(
    url: str,
) -> None:
    encoded = _qp_url(url)
    assert encoded.endswith(b"=\r\n")
    lines = encoded.split(b"\r\n")[:-1]
    assert all(len(line) <= 76 and not line.startswith(b".") for line in lines)
    assert quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode("ascii") == url
