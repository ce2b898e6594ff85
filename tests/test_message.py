"""The MIME message: built once per variant, personalised by substitution, correct on the wire."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.adapters.message import (
    ListIdentity,
    MessageTemplate,
    Recipient,
    Sender,
    message_id,
    unstuff,
)
from newsletter.adapters.render import PREFERENCES_SLOT, UNSUBSCRIBE_SLOT, RenderedVariant, Renderer
from newsletter.config import load_settings
from newsletter.services.compose import compose_edition
from tests.support import SAMPLE_DATE

DAY = date.fromisoformat(SAMPLE_DATE)


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> RenderedVariant:
    settings = load_settings(env_file=tmp_path_factory.mktemp("env") / "absent", environ={})
    edition = compose_edition(settings, DAY)
    return Renderer(title="L’Observateur « quotidien »", locale="fr").render(edition)


@pytest.fixture(scope="module")
def template(variant) -> MessageTemplate:
    identity = ListIdentity(Sender.parse("L’Observateur africain <lettre@exemple.ma>"), "La Lettre")
    return MessageTemplate(variant, identity, DAY)


def recipient(**overrides) -> Recipient:
    values = dict(
        subscriber_id=42,
        email="aicha@exemple.ma",
        name="Aïcha Ouédraogo",
        unsubscribe_url="https://news.exemple.ma/unsubscribe/WzQyLCJhYmNkIl0.sig-nature_x",
        preferences_url="https://news.exemple.ma/preferences/WzQyLCJhYmNkIl0.other=sig",
        unsubscribe_mailto="mailto:unsubscribe@exemple.ma?subject=unsubscribe%20WzQy",
    )
    values.update(overrides)
    return Recipient(**values)


def parse(raw: bytes):
    return email.message_from_bytes(unstuff(raw), policy=email.policy.default)


def test_wire_form_crlf_and_line_lengths(template):
    raw = template.personalise(recipient())
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in raw.replace(b"\r\n", b"")  # no bare CR
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert raw.isascii()


def test_headers(template, variant):
    msg = parse(template.personalise(recipient()))
    assert msg["To"].addresses[0].display_name == "Aïcha Ouédraogo"
    assert msg["To"].addresses[0].addr_spec == "aicha@exemple.ma"
    assert len(msg.get_all("To")) == 1
    assert msg["From"].addresses[0].display_name == "L’Observateur africain"
    assert str(msg["Subject"]) == variant.subject and "\n" not in str(msg["Subject"])
    assert (
        msg["Message-ID"] == message_id(DAY, 42, "exemple.ma") == "<20260127.42.digest@exemple.ma>"
    )
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] is not None
    date_pattern = r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000"  # numeric zone, not GMT
    assert re.fullmatch(date_pattern, msg["Date"]), msg["Date"]
    assert msg["List-Id"].endswith("<daily.exemple.ma>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    urls = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    assert urls == [recipient().unsubscribe_url, recipient().unsubscribe_mailto]


def test_structure_text_first_html_last_and_bodies_decode_to_the_render(template, variant):
    r = recipient()
    msg = parse(template.personalise(r))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    filled = {
        "text/plain": variant.text.replace(UNSUBSCRIBE_SLOT, r.unsubscribe_url).replace(
            PREFERENCES_SLOT, r.preferences_url
        ),
        "text/html": variant.html.replace(UNSUBSCRIBE_SLOT, r.unsubscribe_url).replace(
            PREFERENCES_SLOT, r.preferences_url
        ),
    }
    for part in parts:
        body = part.get_content()
        assert body.replace("\r\n", "\n") == filled[part.get_content_type()].replace("\r\n", "\n")
        assert UNSUBSCRIBE_SLOT not in body and r.unsubscribe_url in body


def test_message_id_stable_per_edition_and_subscriber(template):
    first = parse(template.personalise(recipient()))["Message-ID"]
    again = parse(template.personalise(recipient()))["Message-ID"]
    other = parse(template.personalise(recipient(subscriber_id=43)))["Message-ID"]
    assert first == again != other


def test_quoted_printable_is_smaller_than_base64_would_be(template, variant):
    raw = template.personalise(recipient())
    base64_size = (len(variant.html.encode()) + len(variant.text.encode())) * 4 / 3
    assert len(raw) < base64_size


def test_header_injection_in_name_is_neutralised(template):
    raw = template.personalise(recipient(name="Eve\r\nBcc: victim@example.com"))
    assert b"\r\nBcc:" not in raw
    msg = parse(raw)
    assert msg["Bcc"] is None


def test_links_that_are_not_plain_urls_are_refused(template):
    with pytest.raises(ValueError):
        template.personalise(recipient(unsubscribe_url="https://x/\r\nBcc: a@b"))


@settings(max_examples=40, deadline=None)
@given(
    token=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="<>"),
        min_size=1,
        max_size=400,
    )
)
def test_any_ascii_url_round_trips_through_quoted_printable(template, token):
    url = f"https://news.exemple.ma/unsubscribe/{token}"
    raw = template.personalise(recipient(unsubscribe_url=url))
    assert not _unstuffed_dot_line(raw)
    msg = parse(raw)
    text = next(p for p in msg.iter_parts() if p.get_content_type() == "text/plain").get_content()
    assert url in text


def _unstuffed_dot_line(raw: bytes) -> bool:
    """A line that starts with one dot: a relay would drop that dot (RFC 5321 4.5.2)."""
    return any(line.startswith(b".") and not line.startswith(b"..") for line in raw.split(b"\r\n"))


def test_a_link_whose_line_break_falls_before_a_dot_keeps_its_dot(template):
    # The quoted-printable line of a link holds 75 characters: here the 76th is a dot, so the
    # continuation line would start with it. It starts with "=2E" instead (not dot-stuffed,
    # those lines would lose that dot at the relay; a DKIM body hash would break too).
    url = "https://news.exemple.ma/unsubscribe/" + "x" * 39 + ".12345678.sig"
    assert url[75] == "."
    raw = template.personalise(recipient(unsubscribe_url=url))
    assert not _unstuffed_dot_line(raw)
    assert b"\r\n=2E12345678.sig=\r\n" in raw
    text = next(
        p for p in parse(raw).iter_parts() if p.get_content_type() == "text/plain"
    ).get_content()
    assert url in text


def test_wire_bytes_are_dot_stuffed(template, variant):
    from newsletter.adapters.render import RenderedVariant as RV

    dotted = RV(
        variant.keys,
        variant.subject,
        variant.preheader,
        variant.html,
        ".leading dot\n" + variant.text,
        (),
    )
    identity = ListIdentity(Sender.parse("L <lettre@exemple.ma>"), "La Lettre")
    raw = MessageTemplate(dotted, identity, DAY).personalise(recipient())
    assert b"\r\n..leading dot" in raw
    text = next(
        p for p in parse(raw).iter_parts() if p.get_content_type() == "text/plain"
    ).get_content()
    assert text.startswith(".leading dot")
