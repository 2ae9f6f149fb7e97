"""The export archive: one zip with `data.json` (everything, exact values) and `csv/<table>.csv` per
table, written with the csv module (quoting commas, quotes and newlines) through
gdpr.spreadsheet.safe_cell (formula-like cells neutralised)."""

import csv
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from django.core.serializers.json import DjangoJSONEncoder

from gdpr.registry import Tables
from gdpr.spreadsheet import safe_cell

ARCHIVE_FORMAT = "jia-payments-export/1"
DATA_FILE = "data.json"
CSV_FOLDER = "csv/"
# Archives up to this size stay in memory while they are written; bigger ones spill to a temporary file.
_IN_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass
class Archive:
    file: IO[bytes]  # positioned at 0
    size: int
    sha256: str


def plain(tables: Tables) -> Tables:
    """The tables as their JSON form gives them back (UUIDs, times and decimals as strings)."""
    result: Tables = json.loads(json.dumps(tables, cls=DjangoJSONEncoder))
    return result


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def table_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    columns = columns_of(rows)
    if columns:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def build_archive(*, tables: Tables, manifest: Mapping[str, Any]) -> Archive:
    """Write the zip; the caller stores it (and closes the file)."""
    exact = plain(tables)
    spool = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY_BYTES)  # noqa: SIM115 - returned to the caller
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        document = {**manifest, "format": ARCHIVE_FORMAT, "tables": exact}
        archive.writestr(DATA_FILE, json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2))
        for name, rows in exact.items():
            archive.writestr(f"{CSV_FOLDER}{name}.csv", table_csv(rows))
    size = spool.tell()
    spool.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: spool.read(1 << 16), b""):
        digest.update(chunk)
    spool.seek(0)
    return Archive(file=spool, size=size, sha256=digest.hexdigest())
