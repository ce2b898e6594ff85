"""DKIM signing (issue 12): with NEWSLETTER_DKIM_SELECTOR and NEWSLETTER_DKIM_PRIVATE_KEY set,
every message that leaves (the edition, the editors' test sends from the CLI and from the web
page, the sign-up confirmation) verifies with dkimpy against the published key, and the
signature covers the headers RFC 8058 and the bulk-sender rules need. A bad key is one line,
exit 2, before anything is sent or recorded. Also the Feedback-ID header (Gmail's feedback
loop): the same on every message of an edition, nothing per subscriber in it.

The messages go through the real CLI (or the real web app) to the aiosmtpd server and are read
back as it received them."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.parser import BytesHeaderParser
from pathlib import Path

import dkim
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from newsletter.adapters.dkim import dns_record
from newsletter.adapters.store import open_store
from tests.support import SAMPLE_DATE, SmtpServer, invoke_cli, run_cli, send_env
from tests.web_support import ADMIN_PASSWORD, SAMPLE_DAY, form_token_of, running_app, wait_mails

#: The headers the issue names, which the signature must cover.
REQUIRED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
}
FEEDBACK_ID = "20260127:digest:lettre:daily.exemple.ma"

Key = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def make_key(kind: str) -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def write_pem(path: Path, key: object, *, password: bytes | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


def dkim_env(tmp_path: Path, port: int, key: Key, **overrides: str) -> dict[str, str]:
    pem = write_pem(tmp_path / "dkim.pem", key)
    values = {"NEWSLETTER_DKIM_SELECTOR": "lettre", "NEWSLETTER_DKIM_PRIVATE_KEY": str(pem)}
    return send_env(tmp_path, port, **{**values, **overrides})


def published(key: Key, name: str = "lettre._domainkey.exemple.ma") -> Callable[..., bytes]:
    """dkimpy's DNS look-up: the key's TXT record at ``name`` only, nothing anywhere else."""
    record = dns_record(key).encode("ascii")  # type: ignore[arg-type]

    def lookup(qname: bytes | str, timeout: float = 5) -> bytes | None:
        asked = qname.decode() if isinstance(qname, bytes) else qname
        return record if asked.rstrip(".") == name else None

    return lookup


def tags(raw: bytes) -> dict[bytes, bytes]:
    [signature] = BytesHeaderParser().parsebytes(raw).get_all("DKIM-Signature")
    return dkim.util.parse_tag_value(re.sub(r"\s+", "", str(signature)).encode("ascii"))


def assert_signed(raw: bytes, key: Key, name: str = "lettre._domainkey.exemple.ma") -> None:
    assert dkim.verify(raw, dnsfunc=published(key, name)), raw[:2000].decode(errors="replace")
    found = tags(raw)
    signed = set(found[b"h"].decode().split(":"))
    assert signed >= REQUIRED, REQUIRED - signed
    assert found[b"c"] == b"relaxed/relaxed"
    algorithm = b"ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"
    assert found[b"a"] == algorithm
    selector, _, domain = name.partition("._domainkey.")
    assert (found[b"s"], found[b"d"]) == (selector.encode(), domain.encode())


def import_readers(tmp_path: Path, env: dict[str, str]) -> None:
    """Names that take every form of To: plain, RFC 2047, quoted with a comma, very long."""
    rows = [
        "lecteur0@exemple.ma;Lecteur",
        "aicha@exemple.ma;Aïcha N’Diaye",
        'mamadou@exemple.ma;"Diallo, Mamadou"',
        "long@exemple.ma;" + "Très long nom de lectrice " * 6,
        "sans-nom@exemple.ma;",
        "élodie@exemple.ma;Élodie",  # a UTF-8 To (SMTPUTF8), signed as it goes on the wire
    ]
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text("email;name\n" + "\n".join(rows) + "\n", encoding="utf-8")
    proc = invoke_cli("subscribers", "import", str(csv_file), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_every_message_of_a_send_and_of_a_test_send_verifies_against_the_published_key(
    tmp_path: Path, smtp_server: SmtpServer, kind: str
) -> None:
    key = make_key(kind)
    env = dkim_env(tmp_path, smtp_server.port, key)
    import_readers(tmp_path, env)
    sent = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    tested = run_cli(
        "send", "--date", SAMPLE_DATE, "--test", "redaction@exemple.ma", env=env, cwd=tmp_path
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr

    raws = smtp_server.raw_messages()
    assert len(raws) == 7
    for raw in raws:
        assert_signed(raw, key)
    # One signature each, in front, as the receiver sees the message.
    assert all(raw.startswith(b"DKIM-Signature: ") for raw in raws)
    assert all(raw.count(b"\nDKIM-Signature:") == 0 for raw in raws)

    # The same edition, one Feedback-ID; the editors' test is told apart by its kind.
    ids = [BytesHeaderParser().parsebytes(raw)["Feedback-ID"] for raw in raws]
    assert ids[:6] == [FEEDBACK_ID] * 6
    assert ids[6] == "20260127:test:lettre:daily.exemple.ma"


def test_a_changed_or_added_header_breaks_the_signature(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    key = make_key("rsa")
    env = dkim_env(tmp_path, smtp_server.port, key)
    import_readers(tmp_path, env)
    assert run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    raw = smtp_server.raw_messages()[0]
    lookup = published(key)
    assert dkim.verify(raw, dnsfunc=lookup)
    one_click = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    assert one_click in raw
    # Whitespace changes are what relaxed canonicalisation forgives...
    assert dkim.verify(
        raw.replace(one_click, b"List-Unsubscribe-Post:  " + one_click[23:]), dnsfunc=lookup
    )
    assert dkim.verify(raw.replace(b"MIME-Version: 1.0", b"MIME-Version:\t1.0 "), dnsfunc=lookup)
    # ...not a changed value, a removed one-click header, a second List-Unsubscribe or From
    # (over-signed), nor a changed body.
    tampered = [
        raw.replace(one_click, b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks\r\n"),
        raw.replace(one_click, b""),
        b"List-Unsubscribe: <https://evil.example/u>\r\n" + raw,
        raw.replace(one_click, one_click + b"From: Autre <autre@exemple.ma>\r\n"),
        raw.replace(b"Politique", b"Politiques", 1),
    ]
    for message in tampered:
        assert message != raw
        assert not dkim.verify(message, dnsfunc=lookup)
    # And another key published under the selector does not verify it.
    assert not dkim.verify(raw, dnsfunc=published(make_key("rsa")))


def test_dkim_domain_sets_d_and_the_record_is_looked_up_there(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    key = make_key("ed25519")
    env = dkim_env(
        tmp_path,
        smtp_server.port,
        key,
        NEWSLETTER_DKIM_DOMAIN="Envoi.Exemple.MA",
        NEWSLETTER_DKIM_SELECTOR="2026.lettre",
    )
    import_readers(tmp_path, env)
    assert run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    raws = smtp_server.raw_messages()
    assert len(raws) == 6
    for raw in raws:
        assert_signed(raw, key, "2026.lettre._domainkey.envoi.exemple.ma")


def test_without_a_key_nothing_is_signed_and_feedback_id_is_still_there(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    env = send_env(tmp_path, smtp_server.port)
    import_readers(tmp_path, env)
    assert run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    raws = smtp_server.raw_messages()
    assert len(raws) == 6
    for raw in raws:
        headers = BytesHeaderParser().parsebytes(raw)
        assert headers["DKIM-Signature"] is None
        assert headers.get_all("Feedback-ID") == [FEEDBACK_ID]


def test_the_confirmation_mail_and_the_web_test_send_are_signed(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    key = make_key("rsa")
    pem = write_pem(tmp_path / "dkim.pem", key)
    with running_app(
        tmp_path,
        smtp_factory(),
        NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NEWSLETTER_DKIM_SELECTOR="lettre",
        NEWSLETTER_DKIM_PRIVATE_KEY=str(pem),
        NEWSLETTER_FROM="La Lettre <lettre@exemple.ma>",
        # The confirmation's text ends with the title on a line of its own: a line that starts
        # with a dot, which must reach the receiver whole (SMTP dot-stuffing) for DKIM to pass.
        NEWSLETTER_TITLE=".Lettre du soir",
    ) as live:
        with live.client() as http:
            answer = http.post("/subscribe", data={"email": "aicha@example.com", "name": "Aïcha"})
            assert answer.status_code == 200, answer.text
        with live.client(auth=("editor", ADMIN_PASSWORD)) as editor:
            token = form_token_of(editor.get(f"/preview/{SAMPLE_DATE}").text)
            sent = editor.post(
                f"/editor/{SAMPLE_DATE}/test",
                data={"form_token": token, "address": "redaction@example.com"},
            )
            assert sent.status_code == 200, sent.text
        wait_mails(live, 2)
        assert live.smtp is not None
        raws = live.smtp.raw_messages()
    assert len(raws) == 2
    confirmation, test = sorted(raws, key=lambda raw: b"[TEST]" in raw)
    assert b"confirm" in confirmation.lower() and b"List-Unsubscribe-Post" not in confirmation
    assert b"\r\n.Lettre du soir\r\n" in confirmation
    for raw in raws:
        assert dkim.verify(raw, dnsfunc=published(key)), raw[:1500]
    confirmed = set(tags(confirmation)[b"h"].decode().split(":"))
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"} <= (
        confirmed
    )
    assert set(tags(test)[b"h"].decode().split(":")) >= REQUIRED


# ---------------------------------------------------------------------------------------------
# A bad key is a configuration error: one line, exit 2, nothing sent, nothing recorded
# ---------------------------------------------------------------------------------------------


def _bad_settings(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Each case: the settings and what its one error line says."""
    rsa_1024 = write_pem(
        tmp_path / "short.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    p256 = write_pem(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    locked = write_pem(tmp_path / "locked.pem", make_key("ed25519"), password=b"secret")
    text = tmp_path / "notes.txt"
    text.write_text("ceci n'est pas une clé\n")
    public = tmp_path / "public.pem"
    public.write_bytes(
        make_key("ed25519")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key = "NEWSLETTER_DKIM_PRIVATE_KEY"
    return {
        "missing": ({key: str(tmp_path / "absent.pem")}, "absent.pem': no such file"),
        "directory": ({key: str(tmp_path)}, "cannot be read: is a directory"),
        "not pem": ({key: str(text)}, "is not a PEM private key"),
        "public key": ({key: str(public)}, "is not a PEM private key"),
        "rsa 1024": ({key: str(rsa_1024)}, "is an RSA key of 1024 bits, too short"),
        "ec key": ({key: str(p256)}, "is neither an RSA nor an Ed25519 key"),
        "passphrase": ({key: str(locked)}, "is protected by a passphrase"),
        "selector alone": (
            {key: "", "NEWSLETTER_DKIM_SELECTOR": "lettre"},
            "NEWSLETTER_DKIM_SELECTOR is set but NEWSLETTER_DKIM_PRIVATE_KEY is not",
        ),
        "key alone": (
            {"NEWSLETTER_DKIM_SELECTOR": ""},
            "NEWSLETTER_DKIM_PRIVATE_KEY is set but NEWSLETTER_DKIM_SELECTOR is not",
        ),
        "bad selector": (
            {"NEWSLETTER_DKIM_SELECTOR": "lettre; x=1"},
            "NEWSLETTER_DKIM_SELECTOR='lettre; x=1' is not a DNS name",
        ),
        "bad domain": (
            {"NEWSLETTER_DKIM_DOMAIN": "exemple..ma"},
            "NEWSLETTER_DKIM_DOMAIN='exemple..ma' is not a DNS name",
        ),
    }


BAD_CASES = [
    "missing",
    "directory",
    "not pem",
    "public key",
    "rsa 1024",
    "ec key",
    "passphrase",
    "selector alone",
    "key alone",
    "bad selector",
    "bad domain",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_bad_key_setting_stops_send_with_one_line(
    tmp_path: Path, smtp_server: SmtpServer, case: str
) -> None:
    overrides, expected = _bad_settings(tmp_path)[case]
    # A good key and selector, then the one setting of the case.
    env = dkim_env(tmp_path, smtp_server.port, make_key("ed25519"))
    import_readers(tmp_path, env)
    env.update(overrides)
    for args in (
        ("send", "--date", SAMPLE_DATE),
        ("send", "--date", SAMPLE_DATE, "--test", "a@b.ma"),
    ):
        proc = invoke_cli(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, proc.stderr
        assert errors[0].startswith("error: ") and expected in errors[0], errors[0]
    assert smtp_server.recipients() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.frozen_articles(SAMPLE_DAY) is None


def test_serve_and_run_refuse_a_bad_key_too(tmp_path: Path) -> None:
    env = send_env(
        tmp_path,
        9,
        NEWSLETTER_DKIM_SELECTOR="lettre",
        NEWSLETTER_DKIM_PRIVATE_KEY=str(tmp_path / "absent.pem"),
        NEWSLETTER_SOURCES=str(tmp_path),
    )
    for command in ("serve", "run"):
        proc = run_cli(command, env=env, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "NEWSLETTER_DKIM_PRIVATE_KEY=" in proc.stderr and "no such file" in proc.stderr
