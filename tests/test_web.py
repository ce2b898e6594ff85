"""The web app over real HTTP: uvicorn on a free port, a real SQLite file, a real SMTP server.

Nothing of ours is mocked: requests go through uvicorn and the whole middleware stack, the
confirmation email goes through the aiosmtpd process and is read back from its out directory.
``running_app`` and its helpers are in tests/web_support.py (test_browser.py uses them too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import httpx
import lxml.html
import pytest
from itsdangerous import TimestampSigner

from newsletter.adapters.tokens import Purpose, TokenSigner, address_digest
from newsletter.config import ConfigError
from newsletter.domain import ConsentSource, EditionStatus, SubscriberStatus
from newsletter.web import create_app
from tests.support import SAMPLE_DATE, TEST_SECRET, SmtpServer
from tests.web_support import (
    ADMIN_PASSWORD,
    SAMPLE_DAY,
    LiveApp,
    app_settings,
    confirm_with_button,
    confirmation_link,
    form_token_of,
    mails,
    no_5xx,
    running_app,
    wait_mails,
)


def signed_days_ago(days: int, subscriber_id: int, email_key: str) -> str:
    """A confirmation token as TokenSigner made it ``days`` days ago (same salt, same payload)."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - days * 86400

    signer = Earlier(TEST_SECRET, salt=f"newsletter.{Purpose.CONFIRM}")
    payload = f"{subscriber_id}.{address_digest(TEST_SECRET, email_key)}"
    fresh = TokenSigner(TEST_SECRET).sign(Purpose.CONFIRM, subscriber_id, email_key)
    assert fresh.count(".") == payload.count(".") + 2, "tokens.py changed its token format"
    return signer.sign(payload).decode("ascii")


@pytest.fixture
def live(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as app:
        yield app


# ---------------------------------------------------------------------------------------------
# Sign-up and double opt-in
# ---------------------------------------------------------------------------------------------


def test_signup_sends_one_confirmation_and_activates_only_via_link(live: LiveApp) -> None:
    with live.client() as http:
        form = http.get("/subscribe")
        assert form.status_code == 200
        assert 'name="email"' in form.text and 'name="website"' in form.text
        assert "Économie" in form.text  # the sections, from settings.section_order
        answer = http.post(
            "/subscribe", data={"email": "Aicha@Example.com", "name": "Aïcha", "section": "Sport"}
        )
        assert answer.status_code == 200
        assert "Vérifiez votre boîte mail" in answer.text
        [message] = wait_mails(live, 1)
        assert message["To"] == "Aicha@example.com"
        assert "Confirmez votre abonnement" in message["Subject"]
        assert live.smtp is not None and live.smtp.recipients() == ["Aicha@example.com"]
        assert live.status("aicha@example.com") is SubscriberStatus.PENDING

        link = confirmation_link(message)
        assert link.startswith(live.url)
        page = http.get(link.removeprefix(live.url))  # what a link scanner does: nothing
        assert page.status_code == 200 and "Confirmer l’abonnement" in page.text
        assert live.status("aicha@example.com") is SubscriberStatus.PENDING
        confirmed = confirm_with_button(http, live, link)
        assert confirmed.status_code == 200
        assert "Abonnement confirmé" in confirmed.text
    subscriber = live.store.find_by_email("aicha@example.com")
    assert subscriber is not None
    assert subscriber.status is SubscriberStatus.ACTIVE
    assert subscriber.categories == ("Sport",)
    assert subscriber.consent_source is ConsentSource.WEB
    assert subscriber.consent_detail == "127.0.0.1"
    assert subscriber.confirmed_at is not None
    time.sleep(0.3)
    assert len(mails(live)) == 1  # exactly one confirmation


def test_same_answer_for_new_pending_active_and_unsubscribed(live: LiveApp) -> None:
    live.add("active@example.com")
    live.add("gone@example.com", SubscriberStatus.UNSUBSCRIBED)
    bodies = []
    with live.client() as http:
        for address in (
            "new@example.com",
            "new@example.com",
            "active@example.com",
            "gone@example.com",
        ):
            answer = http.post("/subscribe", data={"email": address})
            assert answer.status_code == 200
            bodies.append(answer.text)
    assert len(set(bodies)) == 1
    wait_mails(live, 4)
    assert live.status("active@example.com") is SubscriberStatus.ACTIVE
    assert live.status("new@example.com") is SubscriberStatus.PENDING


def test_unsubscribed_address_stays_unsubscribed_until_it_confirms(live: LiveApp) -> None:
    live.add("back@example.com", SubscriberStatus.UNSUBSCRIBED)
    with live.client() as http:
        assert http.post("/subscribe", data={"email": "back@example.com"}).status_code == 200
        [message] = wait_mails(live, 1)
        assert live.status("back@example.com") is SubscriberStatus.UNSUBSCRIBED
        assert confirm_with_button(http, live, confirmation_link(message)).status_code == 200
    assert live.status("back@example.com") is SubscriberStatus.ACTIVE


@pytest.mark.parametrize("address", ["not an address", "a@b", "", "x@-example.com", "a" * 400])
def test_invalid_address_gets_a_400_page_saying_why(live: LiveApp, address: str) -> None:
    with live.client() as http:
        answer = http.post("/subscribe", data={"email": address})
    assert answer.status_code == 400
    assert "Adresse e-mail non valide" in answer.text
    assert "<form" in answer.text  # the form again, to correct it
    assert not mails(live)


def test_multipart_signup_and_honeypot(live: LiveApp) -> None:
    with live.client() as http:
        multipart = http.post("/subscribe", files={"email": (None, "multi@example.com")})
        assert multipart.status_code == 200
        robot = http.post("/subscribe", data={"email": "robot@example.com", "website": "spam"})
        assert robot.status_code == 200 and robot.text == multipart.text
    wait_mails(live, 1)
    assert live.status("multi@example.com") is SubscriberStatus.PENDING
    assert live.status("robot@example.com") is None


def test_expired_or_tampered_confirmation_link(live: LiveApp) -> None:
    live.add("p@example.com", SubscriberStatus.PENDING)
    token = live.token(Purpose.CONFIRM, "p@example.com")
    with live.client() as http:
        for bad in (
            token[:-3] + "abc",
            token[:10],
            live.token(Purpose.UNSUBSCRIBE, "p@example.com"),
        ):
            answer = no_5xx(http.get(f"/confirm/{bad}"))
            assert answer.status_code == 400
            assert "/subscribe" in answer.text  # how to sign up again
    assert live.status("p@example.com") is SubscriberStatus.PENDING


def test_confirmation_link_expires(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> None:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_CONFIRM_DAYS="1") as live:
        live.add("late@example.com", SubscriberStatus.PENDING)
        subscriber = live.store.find_by_email("late@example.com")
        assert subscriber is not None
        token = signed_days_ago(2, subscriber.id, subscriber.email_key)
        with live.client() as http:
            answer = http.get(f"/confirm/{token}")
        assert answer.status_code == 400
        assert "valables 1 jour." in answer.text
        assert live.status("late@example.com") is SubscriberStatus.PENDING


# ---------------------------------------------------------------------------------------------
# Rate limits and redirects
# ---------------------------------------------------------------------------------------------


def test_rate_limits_per_address_and_per_client(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    # Behind a proxy on the loopback (NEWSLETTER_TRUSTED_PROXIES): X-Forwarded-For names clients.
    with (
        running_app(
            tmp_path, smtp_factory(), limits=None, NEWSLETTER_TRUSTED_PROXIES="127.0.0.1"
        ) as live,
        live.client() as http,
    ):
        answers = [http.post("/subscribe", data={"email": "bomb@example.com"}) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert len({a.text for a in answers}) == 1  # over the address limit: same page, no mail
        answers += [http.post("/subscribe", data={"email": f"n{i}@example.com"}) for i in range(5)]
        assert all(a.status_code == 200 for a in answers)
        blocked = http.post("/subscribe", data={"email": "eleventh@example.com"})
        assert blocked.status_code == 429
        assert "Trop de demandes" in blocked.text
        # Another client (X-Forwarded-For from the trusted proxy) is not blocked.
        other = http.post(
            "/subscribe",
            data={"email": "other@example.com"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert other.status_code == 200
        wait_mails(live, 3 + 5 + 1)
        time.sleep(0.5)
        recipients = live.smtp.recipients() if live.smtp else []
        assert recipients.count("bomb@example.com") == 3
        assert len(recipients) == 9
        assert live.status("eleventh@example.com") is None


def test_thank_you_redirect_only_to_the_configured_url(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    thanks = "http://127.0.0.1/merci"
    with (
        running_app(tmp_path, smtp_factory(), NEWSLETTER_THANK_YOU_URL=thanks) as live,
        live.client() as http,
    ):
        # From the site (the embed snippet): 303 to the configured page, whatever is asked.
        site = http.post(
            "/subscribe",
            data={"email": "s@example.com", "redirect": "https://evil.example/phish"},
            headers={"Referer": "https://evil.example/page"},
        )
        assert site.status_code == 303
        assert site.headers["location"] == thanks
        # From our own form: the page itself, no redirect.
        own = http.post("/subscribe", data={"email": "o@example.com"}, headers={"Origin": live.url})
        assert own.status_code == 200 and "location" not in own.headers
        invalid = http.post("/subscribe", data={"email": "nope", "redirect": "1"})
        assert invalid.status_code == 400 and "location" not in invalid.headers


def test_thank_you_url_off_site_is_refused_at_start(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, 8000, None, NEWSLETTER_THANK_YOU_URL="https://evil.example/")
    with pytest.raises(ConfigError, match="THANK_YOU_URL"):
        create_app(settings)


# ---------------------------------------------------------------------------------------------
# Unsubscribe (RFC 8058)
# ---------------------------------------------------------------------------------------------


def test_get_unsubscribe_shows_one_button_and_changes_nothing(live: LiveApp) -> None:
    live.add("reader@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "reader@example.com")
    with live.client() as http:
        for _ in range(3):  # link scanners fetch it, sometimes more than once
            page = http.get(f"/unsubscribe/{token}")
            assert page.status_code == 200
            assert page.text.count("<button") == 1
            assert f'action="{live.url}/unsubscribe/{token}"' in page.text
            assert "reader@example.com" not in page.text  # masked: r…@example.com
            # It asks; it does not read as if it were done already (issue 11, problem 9).
            assert "Se désabonner\u00a0?" in page.text
            assert "Voulez-vous vous désabonner de « La Lettre » à l’adresse <bdi>r…" in page.text
            assert "C’est fait" not in page.text and "ne recevrez plus" not in page.text
        assert http.head(f"/unsubscribe/{token}").status_code == 200
    assert live.status("reader@example.com") is SubscriberStatus.ACTIVE


def test_the_unsubscribe_button_confirms_and_a_second_visit_says_it_is_done(
    live: LiveApp,
) -> None:
    live.add("reader@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "reader@example.com")
    with live.client() as http:
        done = http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        assert "C’est fait\u00a0: vous ne recevrez plus « La Lettre »" in done.text
        assert "<button" not in done.text
        assert live.status("reader@example.com") is SubscriberStatus.UNSUBSCRIBED
        again = http.get(f"/unsubscribe/{token}")  # the old email's link, opened later
        assert again.status_code == 200
        assert "ne reçoit plus « La Lettre »" in again.text and "<button" not in again.text
        assert "Voulez-vous" not in again.text
    assert live.status("reader@example.com") is SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_only_that_subscriber(live: LiveApp, encoding: str) -> None:
    live.add("leaving@example.com")
    live.add("staying@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "leaving@example.com")
    body: dict[str, object] = (
        {"data": {"List-Unsubscribe": "One-Click"}}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    # A mail client: no cookie, no Origin, no form token.
    with httpx.Client(base_url=live.url, follow_redirects=False) as http:
        for _ in range(2):  # idempotent
            answer = http.post(f"/unsubscribe/{token}", **body)  # type: ignore[arg-type]
            assert answer.status_code in (200, 202)
            assert "C’est fait" in answer.text
            assert "location" not in answer.headers
            assert "set-cookie" not in answer.headers
    assert live.status("leaving@example.com") is SubscriberStatus.UNSUBSCRIBED
    assert live.status("staying@example.com") is SubscriberStatus.ACTIVE


def test_bad_unsubscribe_tokens_get_4xx_pages(live: LiveApp) -> None:
    live.add("victim@example.com")
    live.add("forgotten@example.com")
    good = live.token(Purpose.UNSUBSCRIBE, "victim@example.com")
    forgotten = live.token(Purpose.UNSUBSCRIBE, "forgotten@example.com")
    live.store.forget("forgotten@example.com")
    other_key = TokenSigner("another-secret-entirely", 86400)
    victim = live.store.find_by_email("victim@example.com")
    assert victim is not None
    bad_tokens = [
        good[:-1] + ("A" if good[-1] != "A" else "B"),  # tampered signature
        good[: len(good) // 2],  # truncated
        live.token(Purpose.PREFERENCES, "victim@example.com"),  # wrong purpose
        live.token(Purpose.CONFIRM, "victim@example.com"),
        other_key.sign(Purpose.UNSUBSCRIBE, victim.id, victim.email_key),  # forged
        forgotten,  # its subscriber was forgotten
        "x" * 5000,
        "%00%ff",
        "%2e%2e",
    ]
    with live.client() as http:
        for token in bad_tokens:
            for method in ("GET", "POST"):
                answer = no_5xx(
                    http.request(
                        method, f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
                    )
                )
                assert 400 <= answer.status_code < 500, (token, method, answer.status_code)
                assert "<html" in answer.text
    assert live.status("victim@example.com") is SubscriberStatus.ACTIVE


def test_unsubscribe_with_wrong_content_type_is_refused(live: LiveApp) -> None:
    live.add("json@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "json@example.com")
    with live.client() as http:
        answer = http.post(f"/unsubscribe/{token}", json={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 415
        assert live.status("json@example.com") is SubscriberStatus.ACTIVE
        # An empty POST (some clients send no body at all) still unsubscribes.
        assert http.post(f"/unsubscribe/{token}").status_code == 200
    assert live.status("json@example.com") is SubscriberStatus.UNSUBSCRIBED


# ---------------------------------------------------------------------------------------------
# Preferences
# ---------------------------------------------------------------------------------------------


def test_preferences_save_and_cross_site_post_refused(live: LiveApp) -> None:
    live.add("prefs@example.com")
    token = live.token(Purpose.PREFERENCES, "prefs@example.com")
    with live.client() as http:
        page = http.get(f"/preferences/{token}")
        assert page.status_code == 200
        form_token = form_token_of(page.text)
        saved = http.post(
            f"/preferences/{token}",
            data={
                "form_token": form_token,
                "section": ["Sport", "Économie", "Bogus"],
                "locale": "ar",
            },
            headers={"Origin": live.url},
        )
        assert saved.status_code == 200
        assert 'dir="rtl"' in saved.text  # the page follows the language just chosen
        found = live.store.find_by_email("prefs@example.com")
        assert found is not None
        assert found.categories == ("Économie", "Sport") and found.locale == "ar"

        # Another site posting (even with a real form token) is refused.
        evil = http.post(
            f"/preferences/{token}",
            data={"form_token": form_token, "locale": "en"},
            headers={"Origin": "https://evil.example"},
        )
        assert evil.status_code == 403
        no_token = http.post(f"/preferences/{token}", data={"locale": "en"})
        assert no_token.status_code == 403
        forged = http.post(
            f"/preferences/{token}", data={"form_token": "abc.def.ghi", "locale": "en"}
        )
        assert forged.status_code == 403
        null_origin = http.post(
            f"/preferences/{token}",
            data={"form_token": form_token, "locale": "en"},
            headers={"Origin": "null"},
        )
        assert null_origin.status_code == 403
    found = live.store.find_by_email("prefs@example.com")
    assert found is not None and found.locale == "ar"


def test_preferences_form_token_is_bound_to_its_subscriber(live: LiveApp) -> None:
    live.add("one@example.com")
    live.add("two@example.com")
    with live.client() as http:
        page = http.get(f"/preferences/{live.token(Purpose.PREFERENCES, 'one@example.com')}")
        stolen = form_token_of(page.text)
        answer = http.post(
            f"/preferences/{live.token(Purpose.PREFERENCES, 'two@example.com')}",
            data={"form_token": stolen, "locale": "en"},
        )
    assert answer.status_code == 403


# ---------------------------------------------------------------------------------------------
# Editors' pages
# ---------------------------------------------------------------------------------------------


def test_editor_pages_are_off_without_a_password(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with running_app(tmp_path, smtp_factory()) as live, live.client() as http:
        for path in ("/editor", f"/preview/{SAMPLE_DATE}"):
            answer = http.get(path, auth=("editor", ""))
            assert answer.status_code == 404
            assert "www-authenticate" not in answer.headers
        assert http.post(f"/editor/{SAMPLE_DATE}/hold").status_code == 404


def test_editor_login(live: LiveApp) -> None:
    with live.client() as http:
        for auth in (None, ("editor", "wrong"), ("someone", ADMIN_PASSWORD), ("editor", "")):
            answer = http.get(f"/preview/{SAMPLE_DATE}", auth=auth)  # type: ignore[arg-type]
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Basic ")
        garbage = http.get("/editor", headers={"Authorization": "Basic !!!notbase64"})
        assert garbage.status_code == 401
        good = http.get(f"/preview/{SAMPLE_DATE}", auth=("editor", ADMIN_PASSWORD))
        assert good.status_code == 200
        assert "mardi 27 janvier 2026" in good.text
        assert "<iframe" in good.text and "sandbox" in good.text
        assert "Version texte" in good.text
        for bad_day in ("2026-1-27", "2026-02-30", "yesterday", "2026-01-27x"):
            assert (
                http.get(f"/preview/{bad_day}", auth=("editor", ADMIN_PASSWORD)).status_code == 404
            )


def test_failed_logins_are_rate_limited(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with (
        running_app(
            tmp_path, smtp_factory(), limits=None, NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD
        ) as live,
        live.client() as http,
    ):
        codes = [http.get("/editor", auth=("editor", f"guess{i}")).status_code for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        # Even the right password waits now: the limit is per client, not per guess.
        assert http.get("/editor", auth=("editor", ADMIN_PASSWORD)).status_code == 429


def test_editor_status_hold_release_and_cross_site(live: LiveApp) -> None:
    auth = ("editor", ADMIN_PASSWORD)
    with live.client(auth=auth) as http:
        live.store.set_held(SAMPLE_DAY, False)  # an edition the ledger knows
        status = http.get("/editor")
        assert status.status_code == 200 and SAMPLE_DATE in status.text
        token = form_token_of(status.text)
        held = http.post(
            f"/editor/{SAMPLE_DATE}/hold", data={"form_token": token}, headers={"Origin": live.url}
        )
        assert held.status_code == 303 and held.headers["location"] == f"{live.url}/editor"
        record = live.store.edition_record(SAMPLE_DAY)
        assert record is not None and record.held
        cross = http.post(
            f"/editor/{SAMPLE_DATE}/release",
            data={"form_token": token},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        no_token = http.post(f"/editor/{SAMPLE_DATE}/release", data={"form_token": ""})
        assert no_token.status_code == 403
        record = live.store.edition_record(SAMPLE_DAY)
        assert record is not None and record.held
        released = http.post(f"/editor/{SAMPLE_DATE}/release", data={"form_token": token})
        assert released.status_code == 303
        record = live.store.edition_record(SAMPLE_DAY)
        assert record is not None and not record.held
        assert http.post("/editor/not-a-date/hold", data={"form_token": token}).status_code == 404


def test_the_signup_promise_follows_the_send_time_or_the_setting(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with running_app(tmp_path, None, NEWSLETTER_SEND_TIME="18:00") as live, live.client() as http:
        page = http.get("/subscribe").text
        assert "Chaque soir vers 18\u00a0h, l’essentiel de l’actualité du jour" in page
        assert "matin" not in page
    promise = 'Le <b>vendredi</b> & "le week-end"'
    with (
        running_app(tmp_path, None, NEWSLETTER_SIGNUP_PROMISE=promise) as live,
        live.client() as http,
    ):
        page = http.get("/").text
        assert "Le &lt;b&gt;vendredi&lt;/b&gt; &amp; &#34;le week-end&#34;" in page
        assert "<b>vendredi" not in page and "Chaque" not in page


def editor_rows(page: str) -> dict[str, list[str]]:
    """The editors' table: each row's cells as text (spaces folded), by edition day."""
    rows = {}
    for row in lxml.html.fromstring(page).xpath("//tbody/tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row.xpath("td")]
        rows[row.xpath("string(td[1]//time/@datetime)")] = cells
    return rows


def test_editor_page_is_localised_and_holds_only_what_can_still_be_held(
    live: LiveApp,
) -> None:
    days = {
        "sent": date(2026, 1, 24),
        "empty": date(2026, 1, 25),
        "sending": date(2026, 1, 26),
        "open": SAMPLE_DAY,
    }
    live.add("lecteur@example.com")  # one pending delivery in each frozen edition
    live.store.freeze_edition(days["sent"], [])
    live.store.mark_edition_sent(days["sent"])
    live.store.record_edition_status(days["empty"], EditionStatus.EMPTY, "no article in its window")
    live.store.freeze_edition(days["sending"], [])
    live.store.set_held(SAMPLE_DAY, False)
    with live.client(auth=("editor", ADMIN_PASSWORD)) as http:
        page = http.get("/editor")
        assert page.status_code == 200
        text = page.text
        rows = editor_rows(text)
        assert rows == {
            "2026-01-27": ["27 janv. 2026", "pas encore envoyée Retenir", "", "", ""],
            "2026-01-26": ["26 janv. 2026", "envoi en cours", "1 pas encore envoyé", "", ""],
            "2026-01-25": [
                "25 janv. 2026",
                "non envoyée : aucun article dans sa fenêtre",
                "",
                "",
                "",
            ],
            "2026-01-24": ["24 janv. 2026", "envoyée", "1 pas encore envoyé", "", ""],
        }
        # No English state, count or ledger note in the French page.
        for english in ("sent", "sending", "pending", "open", "empty", "no article"):
            assert english not in text, english
        assert f'action="{live.url}/editor/{SAMPLE_DATE}/hold"' in text
        for day in ("sent", "empty", "sending"):
            assert f"/editor/{days[day].isoformat()}/hold" not in text, day
        assert text.count(">Retenir<") == 1

        token = form_token_of(text)
        for day in ("sent", "empty"):
            refused = http.post(
                f"/editor/{days[day].isoformat()}/hold",
                data={"form_token": token},
                headers={"Origin": live.url},
            )
            assert refused.status_code == 409, day
            assert "Impossible de retenir cette édition" in refused.text
            assert "est déjà terminée" in refused.text
            assert f'href="{live.url}/editor"' in refused.text
            record = live.store.edition_record(days[day])
            assert record is not None and not record.held, day

        # A held edition that was then sent by hand still offers Release, never Hold.
        live.store.set_held(days["sending"], True)
        text = http.get("/editor").text
        assert f"/editor/{days['sending'].isoformat()}/release" in text
        assert f"/editor/{days['sending'].isoformat()}/hold" not in text
        assert editor_rows(text)["2026-01-26"][1] == "envoi en cours · retenue Libérer"


def test_editor_test_send(live: LiveApp) -> None:
    with live.client(auth=("editor", ADMIN_PASSWORD)) as http:
        preview = http.get(f"/preview/{SAMPLE_DATE}")
        token = form_token_of(preview.text)
        sent = http.post(
            f"/editor/{SAMPLE_DATE}/test",
            data={"form_token": token, "address": "redaction@example.com"},
        )
        assert sent.status_code == 200, sent.text
        assert "mardi 27 janvier 2026" in sent.text
        # Back to the list of editions, not to the preview (issue 11, problem 9).
        assert f'href="{live.url}/editor"' in sent.text
        assert f'href="{live.url}/preview/' not in sent.text
        [message] = wait_mails(live, 1)
        assert message["To"] == "redaction@example.com"
        assert "List-Unsubscribe" in message
        bad = http.post(
            f"/editor/{SAMPLE_DATE}/test", data={"form_token": token, "address": "nope"}
        )
        assert bad.status_code == 400
        # A mistyped address: back to the preview, where the form is.
        assert f'href="{live.url}/preview/{SAMPLE_DATE}"' in bad.text
        assert "Retour à l’aperçu" in bad.text
    assert live.store.edition_record(SAMPLE_DAY) is None


# ---------------------------------------------------------------------------------------------
# Security and robustness
# ---------------------------------------------------------------------------------------------


def test_security_headers_on_every_kind_of_answer(live: LiveApp) -> None:
    live.add("h@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "h@example.com")
    with live.client() as http:
        answers = [
            http.get("/subscribe"),
            http.get("/healthz"),
            http.get("/no/such/page"),
            http.put("/subscribe"),
            http.get("/unsubscribe/garbage"),
            http.post(f"/unsubscribe/{token}"),
            http.get("/editor"),
            http.post("/subscribe", content=b"x" * 100_000, headers={"Content-Type": "text/plain"}),
        ]
    for answer in answers:
        headers = answer.headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert f"form-action 'self' {live.url}" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] in ("no-referrer", "same-origin")
        assert "server" not in headers or "uvicorn" not in headers["server"]


def test_healthz_and_error_pages(live: LiveApp) -> None:
    with live.client() as http:
        health = http.get("/healthz")
        assert health.status_code == 200 and health.text == "ok"
        missing = http.get("/nowhere")
        assert missing.status_code == 404 and "Page introuvable" in missing.text
        method = http.delete("/subscribe")
        assert method.status_code == 405 and "<html" in method.text
        wrong_type = http.post("/subscribe", json={"email": "a@example.com"})
        assert wrong_type.status_code == 415
        broken_multipart = http.post(
            "/subscribe",
            content=b'--zz\r\nContent-Disposition: form-data; name="email"\r\n\r\nx',
            headers={"Content-Type": "multipart/form-data"},
        )
        assert 400 <= broken_multipart.status_code < 500
        a_file = http.post("/subscribe", files={"email": ("a.txt", b"a@example.com")})
        assert 400 <= a_file.status_code < 500


def test_oversized_bodies_get_413(live: LiveApp) -> None:
    big = {"email": "a@example.com", "name": "x" * 70_000}
    with live.client() as http:
        declared = http.post("/subscribe", data=big)
        assert declared.status_code == 413
        assert "Demande trop volumineuse" in declared.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while reading
            yield b"email=a%40example.com&name="
            for _ in range(20):
                yield b"y" * 8192

        chunked = http.post(
            "/subscribe",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert chunked.status_code == 413
    assert live.status("a@example.com") is None


def test_no_5xx_for_odd_requests(live: LiveApp) -> None:
    odd = [
        ("GET", "/unsubscribe/"),
        ("GET", "/preferences/%2e%2e%2f"),
        ("POST", "/preferences/abc"),
        ("GET", "/confirm/" + "A" * 300),
        ("POST", "/subscribe"),
        ("GET", "/preview/2026-01-27"),
        ("GET", "/preview/9999-99-99"),
        ("POST", "/editor/2026-01-27/test"),
        ("OPTIONS", "/subscribe"),
        ("GET", "/subscribe?email=%ff%fe"),
    ]
    with live.client() as http:
        for method, path in odd:
            no_5xx(http.request(method, path))
        no_5xx(
            http.post(
                "/subscribe",
                content=b"email=%ff%fe%00&section=%C3",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        )
        no_5xx(http.post("/subscribe", data={"email": "é@例え.テスト", "name": "\x00\u202e"}))


def test_tokens_do_not_reach_the_log(live: LiveApp, caplog: pytest.LogCaptureFixture) -> None:
    live.add("log@example.com")
    token = live.token(Purpose.UNSUBSCRIBE, "log@example.com")
    with caplog.at_level("INFO", logger="newsletter.web"), live.client() as http:
        http.get(f"/unsubscribe/{token}")
        http.post(f"/unsubscribe/{token}")
    lines = [r.getMessage() for r in caplog.records]
    assert any("/unsubscribe/…" in line for line in lines)
    assert not any(token in line for line in lines)
