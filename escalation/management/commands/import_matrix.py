from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escalation.services.matrix import (
    MatrixFileFormat,
    matrix_file_format_guess,
    matrix_file_load,
    matrix_import,
)
from portal.audit import Actor
from portal.errors import PortalError


class Command(BaseCommand):
    help = (
        "Import the escalation matrix from a YAML or JSON file written by export_matrix. The whole file is "
        "checked first: a file with any problem changes nothing, and every problem is listed."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--format",
            dest="file_format",
            choices=MatrixFileFormat.values,
            help="Default: from the file's extension (.json is JSON), else YAML",
        )

    def handle(self, *args, file, file_format, **options):
        file_format = MatrixFileFormat(file_format or matrix_file_format_guess(path=file))
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            rows = matrix_file_load(text=text, file_format=file_format)
            result = matrix_import(rows=rows, actor=Actor.command("import_matrix"), now=timezone.now())
        except PortalError as exc:
            raise CommandError(f"{file}: {exc.detail}") from exc
        counts = f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged"
        self.stdout.write(f"Imported {file}: {counts}.")
