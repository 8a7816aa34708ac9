"""
C{kezchat-admin}: operator commands that are not part of the running server.

    kezchat-admin nats-keys --out DIR

creates the two NATS keys a deployment needs: C{issuer.seed},
the account key that signs authorization responses, and C{callout.seed},
the user key the chat-server logs in to NATS with. It prints their public
halves as the environment assignments C{deploy/nats.conf} reads.

    kezchat-admin backup --db FILE --out FILE|-

copies a SQLite database (the chat-server's or the sig-server's) while the
server runs, with SQLite's online backup (L{kezchat.tools.backup}).

    kezchat-admin migrate --from kez-chat.db --to postgresql://...

copies a SQLite deployment (kezchat's or kezsig's file) into an empty
PostgreSQL database, for running several instances (docs/scaling.md).

    kezchat-admin log verify --db FILE|postgresql://... [--json]

replays the key directory from the database: every leaf's signature, every
handle and key once, the stored subtree hashes, and the root the server
signs equal to the root of all the leaves (L{kezchat.tools.dbaudit}).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.python import usage

from kezchat import __version__
from kezchat.protocol.natskeys import ACCOUNT, USER, NKey, write_seed_file
from kezchat.tools.backup import BackupError, backup_database, backup_to_stream

ISSUER_FILE = "issuer.seed"
CALLOUT_FILE = "callout.seed"


class NatsKeysOptions(usage.Options):
    synopsis = "--out DIR"
    longdesc = (
        "Create issuer.seed (account seed) and callout.seed (user seed) in DIR,"
        " mode 0600, and print KEZ_CALLOUT_ISSUER=... and KEZ_CALLOUT_USER=..."
        " for nats.conf. Existing files are never overwritten."
    )
    optParameters = [
        ["out", "o", None, "Directory to write the seed files to (created if absent)."]
    ]

    def postOptions(self) -> None:
        if not self["out"]:
            raise usage.UsageError("--out DIR is required")


class BackupOptions(usage.Options):
    synopsis = "--db FILE --out FILE"
    longdesc = (
        "Copy a live SQLite database (kez-chat.db or kez-sig.db) consistently while"
        " the server keeps running and writing, using SQLite's online backup. The copy"
        " is checked, is one self-contained file (no -wal), mode 0600, and never"
        " overwrites an existing file. --out - writes the copy to standard output."
        " A summary goes to standard error."
    )
    optParameters = [
        ["db", "d", None, "The database file to back up."],
        ["out", "o", None, "The new backup file, or - for standard output."],
    ]

    def postOptions(self) -> None:
        for name in ("db", "out"):
            if not self[name]:
                raise usage.UsageError(f"--{name} is required")


class MigrateOptions(usage.Options):
    synopsis = "--from FILE --to postgresql://user:pass@host:port/dbname"
    longdesc = (
        "Copy a SQLite database (kez-chat.db or kez-sig.db) into an empty PostgreSQL"
        " database: handles, the key directory (leaves, subtree hashes, log key), inboxes"
        " with their seqs and counters, idempotency keys, manifests, or sigchain events."
        " Stop the server first."
    )
    optParameters = [
        ["from", None, None, "The SQLite database file."],
        ["to", None, None, "The PostgreSQL URL (the database must exist and be empty)."],
    ]

    def postOptions(self) -> None:
        if not self["from"] or not self["to"]:
            raise usage.UsageError("--from FILE and --to URL are required")
        if not self["to"].startswith(("postgresql://", "postgres://")):
            raise usage.UsageError("--to must be a postgresql:// URL")
        if not os.path.isfile(self["from"]):
            raise usage.UsageError(f"{self['from']} is not a file")


class LogVerifyOptions(usage.Options):
    synopsis = "--db FILE|postgresql://... [--json]"
    longdesc = (
        "Replay the whole key directory from the database, in one snapshot: every"
        " leaf's signature, every handle and key registered once, every stored subtree"
        " hash, and the root the server signs equal to the root of all the leaves."
        " Exit status 0 when all holds, 1 otherwise (each problem is printed)."
    )
    optFlags = [["json", None, "Print the verdict as one JSON object."]]
    optParameters = [["db", "d", None, "The SQLite file or PostgreSQL URL."]]

    def postOptions(self) -> None:
        if not self["db"]:
            raise usage.UsageError("--db is required")


class LogOptions(usage.Options):
    synopsis = "verify --db FILE|URL"
    subCommands = [
        ["verify", None, LogVerifyOptions, "Replay and check the whole key directory."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a log command is required: verify")


class AdminOptions(usage.Options):
    synopsis = "kezchat-admin <command> [options]"
    longdesc = "Operator commands for a kezchat deployment."
    subCommands = [
        ["nats-keys", None, NatsKeysOptions, "Create the NATS issuer and callout keys."],
        ["backup", None, BackupOptions, "Back up a SQLite database while the server runs."],
        ["migrate", None, MigrateOptions, "Copy a SQLite database into PostgreSQL."],
        ["log", None, LogOptions, "Key directory commands (verify)."],
    ]

    def opt_version(self) -> None:
        """
        Print kezchat's version and exit.
        """
        print(f"kezchat-admin {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def nats_keys(out: str | os.PathLike[str]) -> tuple[NKey, NKey]:
    """
    Write a fresh issuer and callout seed into C{out}; return the keys.

    Refuses (C{FileExistsError}) when either file already exists, before
    writing anything.
    """
    directory = Path(out)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = directory / ISSUER_FILE, directory / CALLOUT_FILE
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    issuer, callout = NKey.generate(ACCOUNT), NKey.generate(USER)
    write_seed_file(paths[0], issuer)
    write_seed_file(paths[1], callout)
    return issuer, callout


def main(argv: list[str] | None = None) -> int:
    options = AdminOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{options}\nkezchat-admin: {e}", file=sys.stderr)
        return 2
    if options.subCommand == "nats-keys":
        try:
            issuer, callout = nats_keys(options.subOptions["out"])
        except OSError as e:
            print(f"kezchat-admin: {e}", file=sys.stderr)
            return 1
        print(f"KEZ_CALLOUT_ISSUER={issuer.public}")
        print(f"KEZ_CALLOUT_USER={callout.public}")
    elif options.subCommand == "backup":
        return backup(options.subOptions["db"], options.subOptions["out"])
    elif options.subCommand == "migrate":
        return run_migrate(options.subOptions["from"], options.subOptions["to"])
    elif options.subCommand == "log":
        verify = options.subOptions.subOptions
        return log_verify(verify["db"], bool(verify["json"]))
    return 0


def backup(db: str, out: str) -> int:
    """
    C{kezchat-admin backup}: the exit status, with a summary on stderr.
    """
    try:
        report = (
            backup_to_stream(db, sys.stdout.buffer) if out == "-" else backup_database(db, out)
        )
    except BackupError as e:
        print(f"kezchat-admin: {e}", file=sys.stderr)
        return 1
    print(f"kezchat-admin: backed up {db} to {out}: {report.describe()}", file=sys.stderr)
    return 0


def run_migrate(source: str, target: str) -> int:
    """
    C{kezchat-admin migrate}: report per table, one line of error on failure.
    """
    import asyncio

    from kezchat.tools.migrate import MigrationError, migrate

    try:
        copied = asyncio.run(migrate(source, target, report=print))
    except (MigrationError, OSError) as e:
        print(f"kezchat-admin: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the driver's errors: connection, permissions
        print(f"kezchat-admin: migration failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"migrated the {copied.kind} database {source} into PostgreSQL")
    return 0


def log_verify(db: str, as_json: bool) -> int:
    """
    C{kezchat-admin log verify}: 0 when the key directory holds together.
    """
    import asyncio
    import json

    from kezchat.storage.dburl import is_postgres_url
    from kezchat.tools.dbaudit import audit_postgres, audit_sqlite

    try:
        if is_postgres_url(db):
            verdict = asyncio.run(audit_postgres(db))
        elif not os.path.isfile(db):
            print(f"kezchat-admin: {db} is not a file", file=sys.stderr)
            return 1
        else:
            verdict = audit_sqlite(db)
    except Exception as e:  # the database's own errors: unreadable, not a chat database
        print(f"kezchat-admin: cannot read the key directory of {db}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(verdict, sort_keys=True))
    else:
        for problem in verdict["problems"]:
            print(f"PROBLEM {problem}")
        state = "OK" if verdict["ok"] else f"FAILED ({verdict['problem_count']} problems)"
        print(f"{state}: {verdict['size']} leaves, {verdict['handles']} handles, root "
              f"{verdict['root']}, log key {verdict['key']}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
