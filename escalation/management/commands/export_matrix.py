from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from escalation.services.matrix import (
    MatrixFileFormat,
    matrix_export,
    matrix_file_dump,
    matrix_file_format_guess,
)


class Command(BaseCommand):
    help = "Write the escalation matrix as YAML or JSON, to stdout or a file; import_matrix reads it back."

    def add_arguments(self, parser):
        parser.add_argument(
            "--format",
            dest="file_format",
            choices=MatrixFileFormat.values,
            help="Default: from the --output file's extension (.json is JSON), else YAML",
        )
        parser.add_argument("--output", help="The file to write. Default: stdout")

    def handle(self, *args, file_format, output, **options):
        if file_format is None:
            file_format = matrix_file_format_guess(path=output or "")
        rows = matrix_export()
        text = matrix_file_dump(rows=rows, file_format=MatrixFileFormat(file_format))
        if output is None:
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc}") from exc
        self.stderr.write(f"Wrote {len(rows)} matrix rows to {output}.")
