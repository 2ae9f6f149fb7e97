"""The export's CSV files: written with the csv module, so hostile values survive a CSV reader, and
formula-like cells are shown as text by spreadsheets."""

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest

from billing.models import Refund
from gdpr.archive import build_archive, table_csv
from gdpr.models import RequestKind
from gdpr.services import data_request_create
from tests.billing.factories import CustomerFactory, PaymentFactory, RefundFactory
from tests.gdpr.support import run_to_the_end

HOSTILE = [
    "plain",
    "a,b,c",
    'say "hi"',
    "line one\nline two\r\nline three",
    'comma, "quote" and\nnewline',
    "Zoë ✓ 東京",
    "  spaces around  ",
    "",
]
FORMULAS = ["=1+2", '=HYPERLINK("http://evil.example","click")', "+SUM(A1:A9)", "-2+3", "@cmd", "\tTAB", "\rCR"]


def _read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_hostile_values_round_trip_through_a_csv_reader() -> None:
    rows = [{"id": n, "value": value, "nested": {"k": value}} for n, value in enumerate(HOSTILE)]

    read = _read(table_csv(rows))

    assert [row["value"] for row in read] == HOSTILE
    assert [json.loads(row["nested"])["k"] for row in read] == HOSTILE
    assert [row["id"] for row in read] == [str(n) for n in range(len(HOSTILE))]


def test_formula_like_cells_come_back_as_text_with_a_leading_apostrophe() -> None:
    read = _read(table_csv([{"value": value} for value in FORMULAS]))

    assert [row["value"] for row in read] == ["'" + value for value in FORMULAS]
    assert all(not row["value"].startswith(("=", "+", "-", "@", "\t", "\r")) for row in read)


def test_none_booleans_and_a_table_whose_rows_differ_in_columns() -> None:
    read = _read(table_csv([{"a": None, "b": True}, {"b": False, "c": 3}]))

    assert read == [{"a": "", "b": "true", "c": ""}, {"a": "", "b": "false", "c": "3"}]


def test_the_json_file_keeps_the_exact_values_and_an_empty_table_has_an_empty_csv() -> None:
    archive = build_archive(tables={"t.values": [{"v": v} for v in HOSTILE + FORMULAS], "t.empty": []}, manifest={})

    with zipfile.ZipFile(archive.file) as zipped:
        data = json.loads(zipped.read("data.json"))
        assert [row["v"] for row in data["tables"]["t.values"]] == HOSTILE + FORMULAS
        assert zipped.read("csv/t.empty.csv") == b""
    assert archive.size > 0 and len(archive.sha256) == 64


@pytest.mark.django_db
def test_a_hostile_refund_note_survives_the_whole_export(export_storage: Path) -> None:
    user_id = uuid.uuid4()
    note = "Refund, \"goodwill\"\n=cmd|' /C calc'!A0"
    RefundFactory(payment=PaymentFactory(customer=CustomerFactory(user_id=user_id)), note=note)
    export, _ = data_request_create(kind=RequestKind.EXPORT, user_id=user_id, email="")

    done = run_to_the_end(export.id)

    with zipfile.ZipFile(export_storage / done.file_name) as zipped:
        refunds = _read(zipped.read("csv/billing.refunds.csv").decode())
        exact = json.loads(zipped.read("data.json"))["tables"]["billing.refunds"]
    assert [row["note"] for row in refunds] == [note]  # starts with "R": no formula guard needed
    assert [row["note"] for row in exact] == [Refund.objects.get().note]
