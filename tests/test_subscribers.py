"""The subscriber service: import rules, suppression rules, export round trip, add/forget."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from newsletter.adapters.csvfile import open_csv
from newsletter.adapters.store import Store
from newsletter.domain import ConsentSource, SubscriberStatus
from newsletter.domain.addresses import InvalidAddress
from newsletter.domain.errors import UsageError
from newsletter.services.subscribers import (
    AddressRefused,
    UnknownSubscriber,
    add,
    export_csv,
    forget,
    import_csv,
    unsubscribe,
)
from tests.factories import FakeClock, make_store, new_subscriber, write_file

# A French spreadsheet export (Excel "CSV UTF-8"): BOM, semicolons, CRLF, an extra column.
FRENCH_EXPORT = (
    "Email;Nom complet;name;categories;Remarques\r\n"
    ' Karim.Benali@Example.com ;x;"Benali, Karim";Économie|Sport;client fidèle\r\n'
    "aicha@exemple.ma;x;Aïcha Ouédraogo;Culture;\r\n"
    "\r\n"
    "KARIM.BENALI@example.COM;x;Karim again;;doublon\r\n"
    "pas-une-adresse;x;Erreur;;\r\n"
    "ancien@example.com;x;Ancien Abonné;;s'était désabonné\r\n"
    '"multi@example.org";x;"Nom sur\r\ndeux lignes";"Sécurité, Politique";\r\n'
    "vide@;x;Sans domaine;;\r\n"
    ";;;;\r\n"
    "  youssef@example.com;x;  Youssef   El Amrani ;;\r\n"
)


def import_text(store: Store, text: str, name: str = "abonnes.csv", strict: bool = False):
    return import_csv(store, io.StringIO(text, newline=""), name, strict=strict)


def export_text(store: Store, status: SubscriberStatus | None = None) -> str:
    out = io.StringIO(newline="")
    export_csv(store, out, status)
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with make_store(tmp_path) as opened:
        yield opened


def test_acceptance_french_spreadsheet(store: Store, tmp_path: Path) -> None:
    store.add(new_subscriber("ancien@example.com", status=SubscriberStatus.UNSUBSCRIBED))
    path = write_file(tmp_path / "abonnes.csv", FRENCH_EXPORT, bom=True)

    with open_csv(path) as stream:
        report = import_csv(store, stream, path.name)

    assert (report.added, report.unchanged) == (4, 1)
    assert [(r.line, r.value) for r in report.rejected] == [
        (5, "KARIM.BENALI@example.COM"),
        (6, "pas-une-adresse"),
        (10, "vide@"),
    ]
    assert report.rejected[0].reason == "duplicate of line 2"
    assert "@-sign" in report.rejected[1].reason
    active = {s.email: s for s in store.iter_active()}
    assert list(active) == [
        "Karim.Benali@example.com",
        "aicha@exemple.ma",
        "multi@example.org",
        "youssef@example.com",
    ]
    assert active["Karim.Benali@example.com"].name == "Benali, Karim"
    assert active["Karim.Benali@example.com"].categories == ("Économie", "Sport")
    assert active["aicha@exemple.ma"].name == "Aïcha Ouédraogo"
    assert active["multi@example.org"].name == "Nom sur deux lignes"
    assert active["multi@example.org"].categories == ("Sécurité", "Politique")
    assert active["youssef@example.com"].name == "Youssef El Amrani"
    assert active["aicha@exemple.ma"].consent_source is ConsentSource.IMPORT
    assert active["aicha@exemple.ma"].consent_detail == "abonnes.csv"
    assert active["aicha@exemple.ma"].created_at == active["aicha@exemple.ma"].consent_at
    assert active["aicha@exemple.ma"].created_at == FakeClock().now  # aware UTC, bulk path
    assert store.find_by_email("ancien@example.com").status is SubscriberStatus.UNSUBSCRIBED

    # Round trip: export -> import into an empty database -> export gives the same rows.
    first = export_text(store)
    assert 'Karim.Benali@example.com,"Benali, Karim",Économie|Sport,,active' in first
    with make_store(tmp_path, name="other.db") as other:
        assert import_text(other, first).rejected == []
        assert export_text(other) == first


def test_importing_the_same_file_twice_changes_nothing(store: Store) -> None:
    first = import_text(store, FRENCH_EXPORT)
    before = export_text(store)
    rows = list(store.iter_subscribers())
    second = import_text(store, FRENCH_EXPORT)
    assert second.added == 0 and second.unchanged == first.added
    assert list(store.iter_subscribers()) == rows  # timestamps included
    assert export_text(store) == before


@pytest.mark.parametrize(
    "status", [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED]
)
def test_import_never_reactivates_a_stopped_address(store: Store, status: SubscriberStatus) -> None:
    store.add(new_subscriber("stop@example.com", name="Kept", status=status))
    report = import_text(store, "email,name,status\nSTOP@example.com,New name,active\n")
    assert report.unchanged == 1 and report.rejected == []
    kept = store.find_by_email("stop@example.com")
    assert (kept.status, kept.name) == (status, "Kept")


def test_import_refuses_a_forgotten_address(store: Store) -> None:
    store.add(new_subscriber("gone@example.com"))
    forget(store, "Gone@Example.com")
    report = import_text(store, "email\n gone@EXAMPLE.com \nnew@example.com\n")
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "forgotten at its owner's request: it cannot be re-added")
    ]
    assert store.find_by_email("gone@example.com") is None
    assert report.added == 1


def test_status_column_imports_stopped_addresses_and_stops_listed_ones(store: Store) -> None:
    store.add(new_subscriber("listed@example.com"))
    text = (
        "email,status\n"
        "listed@example.com,Unsubscribed\n"
        "b@example.com,bounced\n"
        "c@example.com,\n"
        "d@example.com,pending\n"
        "e@example.com,perhaps\n"
    )
    report = import_text(store, text)
    assert (report.added, report.updated) == (3, 1)
    assert [(r.line, r.value) for r in report.rejected] == [(6, "e@example.com")]
    assert "unknown status 'perhaps'" in report.rejected[0].reason
    statuses = {s.email: s.status for s in store.iter_subscribers()}
    assert statuses == {
        "listed@example.com": SubscriberStatus.UNSUBSCRIBED,
        "b@example.com": SubscriberStatus.BOUNCED,
        "c@example.com": SubscriberStatus.ACTIVE,
        "d@example.com": SubscriberStatus.PENDING,
    }


def test_strict_import_writes_nothing_when_a_row_is_rejected(store: Store) -> None:
    report = import_text(store, "email\na@example.com\nbroken\n", strict=True)
    assert not report.written and report.added == 0
    assert len(report.rejected) == 1
    assert list(store.iter_subscribers()) == []
    clean = import_text(store, "email\na@example.com\n", strict=True)
    assert clean.written and clean.added == 1


def test_invalid_locale_and_overlong_name_are_rejected_rows(store: Store) -> None:
    text = (
        "email,name,locale\na@example.com,,xx_YY\n"
        f"b@example.com,{'n' * 300},fr\nc@example.com,,fr-fr\n"
    )
    report = import_text(store, text)
    assert [r.line for r in report.rejected] == [2, 3]
    assert store.find_by_email("c@example.com").locale == "fr_FR"


def test_export_filters_by_status(store: Store) -> None:
    store.add(new_subscriber("a@example.com"))
    store.add(new_subscriber("b@example.com", status=SubscriberStatus.BOUNCED))
    assert export_text(store, SubscriberStatus.BOUNCED) == (
        "email,name,categories,locale,status\r\nb@example.com,,,,bounced\r\n"
    )


def test_add_creates_an_active_subscriber_with_cli_consent(tmp_path: Path) -> None:
    clock = FakeClock()
    with make_store(tmp_path, clock) as store:
        result = add(store, " Nadia@Example.com ", "Nadia", "Économie, Sport", "ar")
        assert result.outcome == "added"
        sub = result.subscriber
        assert (sub.email, sub.status, sub.categories) == (
            "Nadia@example.com",
            SubscriberStatus.ACTIVE,
            ("Économie", "Sport"),
        )
        assert (sub.consent_source, sub.consent_at) == (ConsentSource.CLI, clock.now)
        assert add(store, "nadia@example.com").outcome == "already active"


def test_add_activates_a_pending_sign_up(store: Store) -> None:
    from newsletter.domain.addresses import normalise_address

    pending = store.create_pending(normalise_address("p@example.com"), "", [], "")
    result = add(store, "p@example.com")
    assert result.outcome == "activated"
    assert store.get(pending.id).status is SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    "status", [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED]
)
def test_add_refuses_a_stopped_address(store: Store, status: SubscriberStatus) -> None:
    store.add(new_subscriber("s@example.com", status=status))
    with pytest.raises(AddressRefused, match=f"is {status}"):
        add(store, "S@example.com")
    assert store.find_by_email("s@example.com").status is status


def test_add_refuses_a_forgotten_address(store: Store) -> None:
    forget(store, "never@example.com")  # not on the list: suppressed all the same
    with pytest.raises(AddressRefused, match="forgotten"):
        add(store, "NEVER@example.com")
    assert store.find_by_email("never@example.com") is None


def test_add_reports_invalid_input_as_usage_errors(store: Store) -> None:
    with pytest.raises(InvalidAddress):
        add(store, "nobody")
    with pytest.raises(UsageError, match="unknown locale"):
        add(store, "a@example.com", locale="klingon")


def test_unsubscribe(store: Store) -> None:
    store.add(new_subscriber("u@example.com"))
    sub, changed = unsubscribe(store, "U@example.com")
    assert changed and sub.status is SubscriberStatus.UNSUBSCRIBED
    assert unsubscribe(store, "u@example.com")[1] is False
    with pytest.raises(UnknownSubscriber):
        unsubscribe(store, "who@example.com")
