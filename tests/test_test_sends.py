"""Editors' test sends are unmistakable (issue 11, problem 6): each carries its own Message-ID
(a mailbox drops a second message whose Message-ID it already has) and "[TEST]" in its Subject,
and its links open a page that says it was a test, over HTTP with the real web app."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import httpx
from itsdangerous import Signer

from newsletter.domain import SubscriberStatus
from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, SmtpServer, invoke_cli, send_env
from tests.web_support import ADMIN_PASSWORD, form_token_of, running_app, wait_mails


def test_two_test_sends_are_two_messages_marked_test_with_their_own_message_ids(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port)
    import_addresses(tmp_path, env, readers(1))
    for _ in range(2):
        proc = invoke_cli(
            "send",
            "--date",
            SAMPLE_DATE,
            "--test",
            "editor@exemple.ma",
            "--test",
            "chef@exemple.ma",
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    tests = smtp_server.messages()
    assert len(tests) == 4
    ids = [m["Message-ID"] for m in tests]
    assert len(set(ids)) == 4, ids  # per send and per address
    assert all(".test-" in i for i in ids)
    for message in tests:
        subject = str(make_header(decode_header(message["Subject"])))
        assert subject.startswith("[TEST] "), subject

    real = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    [delivered] = smtp_server.messages()[4:]
    assert ".test-" not in delivered["Message-ID"] and delivered["Message-ID"] not in ids
    assert not str(make_header(decode_header(delivered["Subject"]))).startswith("[TEST]")


# ---------------------------------------------------------------------------------------------
# A test message's links (issue 11, problem 6): they open a page that says it was a test
# ---------------------------------------------------------------------------------------------

TEST_PAGE = "C’était un message de test"


def _links_of(message: EmailMessage, path: str) -> set[str]:
    """Every URL to ``path`` in both bodies and in List-Unsubscribe."""
    found: set[str] = set()
    for kind in ("plain", "html"):
        part = message.get_body(preferencelist=(kind,))
        assert part is not None
        found.update(re.findall(rf"https?://[^\s\"<>]+{path}[^\s\"<>]+", part.get_content()))
    found.update(re.findall(rf"<(https?://[^>]+{path}[^>]+)>", message["List-Unsubscribe"]))
    return found


def test_a_test_messages_links_open_the_test_page_and_change_nobody(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as live:
        # The editor is a subscriber too: a click in the test must not unsubscribe them.
        live.add("redaction@example.com")
        live.add("lecteur@example.com")
        with live.client(auth=("editor", ADMIN_PASSWORD)) as editor:
            token = form_token_of(editor.get(f"/preview/{SAMPLE_DATE}").text)
            sent = editor.post(
                f"/editor/{SAMPLE_DATE}/test",
                data={"form_token": token, "address": "redaction@example.com"},
            )
            assert sent.status_code == 200, sent.text
        [message] = wait_mails(live, 1)
        assert str(make_header(decode_header(message["Subject"]))).startswith("[TEST] ")
        unsubscribe = _links_of(message, "/unsubscribe/")
        preferences = _links_of(message, "/preferences/")
        assert len(unsubscribe) == 1 and len(preferences) == 1, (unsubscribe, preferences)
        [unsubscribe_url], [preferences_url] = unsubscribe, preferences
        assert unsubscribe_url.startswith(live.url) and preferences_url.startswith(live.url)

        # A reader's browser (GET, the button's POST) and a mail client's RFC 8058 one-click POST.
        with httpx.Client(follow_redirects=False, timeout=30) as http:
            answers = [
                http.get(unsubscribe_url),
                http.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"}),
                http.post(unsubscribe_url),
                http.get(preferences_url),
                http.post(preferences_url, data={"section": "Sport", "locale": "ar"}),
            ]
            for answer in answers:
                assert answer.status_code == 200, (answer.request.url, answer.text[:300])
                assert TEST_PAGE in answer.text
                assert "Ce lien n’est pas valide" not in answer.text
            assert "ce lien ne désabonne personne" in answers[0].text
            assert "ce lien ne modifie les préférences de personne" in answers[3].text
            assert "<button" not in answers[0].text  # nothing to press: nothing would happen

            # Only genuine test links: a forged, tampered or cross-purpose one is not valid.
            test_token = unsubscribe_url.rpartition("/")[2]
            forged = Signer("another-secret", salt="newsletter.test.unsubscribe").sign(
                test_token.rsplit(".", 1)[0]
            )
            for bad in (
                f"{live.url}/unsubscribe/{test_token[:-2]}xx",
                f"{live.url}/unsubscribe/{forged.decode()}",
                f"{live.url}/preferences/{test_token}",  # an unsubscribe test token
                f"{live.url}/unsubscribe/{preferences_url.rpartition('/')[2]}",
            ):
                for method in ("GET", "POST"):
                    answer = http.request(method, bad, data={"List-Unsubscribe": "One-Click"})
                    assert answer.status_code == 400, (bad, method, answer.status_code)
                    assert "Ce lien n’est pas valide" in answer.text
                    assert TEST_PAGE not in answer.text

        for address in ("redaction@example.com", "lecteur@example.com"):
            assert live.status(address) is SubscriberStatus.ACTIVE
        editor_row = live.store.find_by_email("redaction@example.com")
        assert editor_row is not None and editor_row.categories == () and editor_row.locale == ""
