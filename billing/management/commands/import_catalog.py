"""`python manage.py import_catalog FILE.json`: upsert plans, features, family seats and prices."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.catalog import catalog_import
from billing.errors import CatalogInvalid


class Command(BaseCommand):
    help = "Import the plan catalog from a JSON file (format: billing/catalog.schema.json). Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the catalog JSON file")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from exc
        try:
            result = catalog_import(data=data)
        except CatalogInvalid as exc:
            raise CommandError(f"{path}: {exc}") from exc
        if options["verbosity"] >= 1:
            self.stdout.write(f"Imported {path}: {result.summary()}")
