"""``audit verify`` checks the hash chain; ``audit export`` streams the trail as JSON Lines or CSV.

``audit verify --file EXPORT.jsonl`` needs no database: an auditor can check an export on their own machine
with the chain key alone.

Exit status of ``verify``: 0 for an intact chain, 1 for a broken one (the report on stderr, as it is), and
Django's usual one-line ``CommandError`` (also 1) when the input cannot be read at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from django.core.management.base import CommandError, CommandParser

from gdpr_requests.audit import chain as audit
from gdpr_requests.management.cli import CliCommand, iso_date


class Command(CliCommand):
    help = "Verify the audit trail's hash chain, or export it (JSON Lines or CSV) with its hashes."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{verify,export}")

        verify = sub.add_parser(
            "verify",
            help="Recompute the chain: prints 'OK: <n> events, head <hash>' or names the first broken event.",
        )
        verify.add_argument(
            "--file", metavar="EXPORT.jsonl", help="Verify a JSON Lines export instead of the database (no DB needed)."
        )

        export = sub.add_parser("export", help="Stream events with their hashes to stdout or a file.")
        export.add_argument("--since", type=iso_date, metavar="YYYY-MM-DD", help="First day (included).")
        export.add_argument("--until", type=iso_date, metavar="YYYY-MM-DD", help="Last day (included).")
        export.add_argument("--format", dest="fmt", choices=("jsonl", "csv"), default="jsonl")
        export.add_argument("--output", metavar="FILE", help="Write here instead of stdout (replaced atomically).")
        export.add_argument(
            "--manifest",
            metavar="FILE",
            help="Also write the export's manifest here (JSON: chain head, filters, count, last hash).",
        )
        export.add_argument("--action", default="", help="Only this action (a prefix when it ends with '*').")
        export.add_argument("--reference", default="", help="Only events of this request reference.")
        export.add_argument(
            "--actor", default="", help="Only events by this actor label (username, 'cli'...) or type (staff...)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "verify":
            self.verify(options["file"])
        else:
            self.export(options)

    def verify(self, path: str | None) -> None:
        if path:
            try:
                result = audit.verify_file(path)
            except FileNotFoundError:
                raise CommandError(f"The file {path!r} does not exist.") from None
            except UnicodeDecodeError:
                raise CommandError(f"The file {path!r} is not UTF-8 text (is it a JSON Lines export?).") from None
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot verify {path!r}: {exc}") from None
        else:
            result = audit.verify_database()
        if not result.ok:
            # A broken chain is the command's verdict, not a misuse of it: print the report as it is (a
            # CommandError would prefix it with "CommandError: "), and still exit 1 so scripts and cron notice.
            # SystemExit, as Django's own ``migrate --check`` does, so call_command callers see the status too.
            self.stderr.write(result.summary())
            self.stderr.flush()
            raise SystemExit(1)
        self.stdout.write(result.summary())

    def export(self, options: dict[str, Any]) -> None:
        from gdpr_requests.audit.export import ExportError, export_lines, manifest_text

        filters = {
            "since": options["since"],
            "until": options["until"],
            "action": options["action"].strip(),
            "reference": options["reference"].strip(),
            "actor": options["actor"].strip(),
        }
        manifest: dict[str, Any] = {}
        try:
            chunks = export_lines(fmt=options["fmt"], manifest=manifest, **filters)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        # Record the export first: the trail shows who took a copy of it and with what filters.
        audit.audit_record(
            action="audit.exported",
            actor=audit.Actor.system("cli"),
            payload={
                "format": options["fmt"],
                "destination": "file" if options["output"] else "stdout",
                **{
                    key: (value.isoformat() if hasattr(value, "isoformat") else value) or None
                    for key, value in filters.items()
                },
            },
        )
        path = options["output"]
        if not path:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            self.stdout.flush()
        else:
            self._write_atomically(path, chunks)
            self.stderr.write(f"Exported to {path}.")
        if options.get("manifest"):
            # Written once the rows are out: only then are the count and the last hash known.
            self._write_atomically(options["manifest"], iter([manifest_text(manifest)]))
            self.stderr.write(f"Manifest written to {options['manifest']}.")

    def _write_atomically(self, path: str, chunks: Iterator[str]) -> None:
        partial = f"{path}.partial"
        try:
            with open(partial, "w", encoding="utf-8", newline="") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            os.replace(partial, path)
        except OSError as exc:
            if os.path.exists(partial):
                os.unlink(partial)
            raise CommandError(f"Cannot write {path!r}: {exc.strerror or exc}.") from None
