"""
One SQLite database, used from the reactor without ever blocking it.

Writes go to a single writer thread that owns the only writing connection.
Whatever writes are queued when it wakes up run as one transaction (each in
its own savepoint, so one failing write does not undo the others), then one
commit with C{synchronous=FULL} makes them all durable: group commit, the
way to get throughput without weakening durability. Reads run on a small
pool of threads with their own connections; in WAL mode they never wait for
the writer.

Faults of the database itself (disk full, another process holding the
write lock, I/O errors) fail the writes they hit with L{DatabaseUnavailable}
and nothing else: the writer thread survives every SQLite error, rolls back
what it can, reopens its connection if it must, and takes the next batch as
if nothing had happened, so writes succeed again by themselves once the
cause is gone. While the last attempt failed the database reports itself
C{"degraded"} (L{SQLiteDatabase.health}) and probes now and then, so
healing shows even when nobody writes.
"""

from __future__ import annotations

import enum
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from kezchat.reactor import IServerReactor
from kezchat.storage.errors import DatabaseClosed, DatabaseUnavailable, Rejected
from kezchat.storage.gate import AdmissionGate
from kezchat.storage.sqlite.schema import upgrade

T = TypeVar("T")


class _Stop(enum.Enum):
    """
    The writer's stop signal on the job queue: an enum member rather than a
    bare object() so that C{job is _STOP} tells the type checker which it is.
    """

    STOP = enum.auto()


_STOP: Final = _Stop.STOP
#: one queued write: the function, its arguments, the Deferred to fire
_Job = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]
#: one answered write: its Deferred, True/False (ok/failed) or None (undone
#: by a fault of the database), and the result or Failure
_Outcome = tuple[Deferred[Any], bool | None, Any]

#: seconds a connection waits for another one's lock before failing with
#: "busy": long enough for another process's ordinary commit, short enough
#: that a client gets its 503 in seconds rather than a hang
BUSY_TIMEOUT = 2.0

#: seconds between health probes while degraded
PROBE_INTERVAL = 1.0

#: SQLite primary result codes that are the database's fault, not the write's
_CAUSE_BY_CODE = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
    sqlite3.SQLITE_PROTOCOL: "busy",
    sqlite3.SQLITE_IOERR: "io",
    sqlite3.SQLITE_READONLY: "readonly",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
    sqlite3.SQLITE_NOMEM: "no_memory",
    sqlite3.SQLITE_CANTOPEN: "cannot_open",
}


def fault_cause(error: BaseException) -> str | None:
    """
    The cause under which C{error} counts as a fault of the database (see
    L{kezchat.storage.errors.CAUSES}), or C{None} if it is the write's own
    error (a constraint, a refusal raised by the job).
    """
    if isinstance(error, DatabaseUnavailable):
        return error.cause
    if not isinstance(error, sqlite3.Error):
        return None
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    return _CAUSE_BY_CODE.get(code & 0xFF)


def unavailable(error: BaseException, cause: str | None = None) -> DatabaseUnavailable:
    """
    C{error} as the L{DatabaseUnavailable} a caller sees.
    """
    if isinstance(error, DatabaseUnavailable):
        return error
    cause = cause or fault_cause(error) or "other"
    return DatabaseUnavailable(cause, f"the database is unavailable ({cause}): {error}")


def rejected(error: sqlite3.Error) -> Rejected:
    """
    A driver error that is the statement's own fault (a constraint, a
    value SQLite cannot take) as the L{Rejected} a caller sees.
    """
    return Rejected(f"SQLite refused the write: {error}")


def _own_failure(error: BaseException) -> Failure:
    """
    The failure a job that raised C{error} (not a fault of the database)
    reports: what the job raised, with SQLite's own errors translated.
    """
    if isinstance(error, sqlite3.Error):
        return Failure(rejected(error))
    failure = Failure()
    failure.cleanFailure()
    return failure


def _probe(conn: sqlite3.Connection) -> None:
    """
    A write that needs a free page, undone in the same transaction: it
    fails while the disk (or C{max_page_count}) is full, and succeeds once
    there is room again.
    """
    conn.execute("INSERT INTO kez_health_probe (filler) VALUES (zeroblob(4096))")
    conn.execute("DELETE FROM kez_health_probe")


class SQLiteDatabase(Service):
    """
    A service owning one SQLite file.

    @ivar ready: fires once the schema is up to date (or fails if the file
        cannot be opened or upgraded); reads wait for it, writes queue
        behind it.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: IServerReactor,
        *,
        readers: int = 3,
        schema_package: str = "kezchat.storage.sqlite",
        max_batch: int = 512,
        busy_timeout: float = BUSY_TIMEOUT,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
        on_write_failure: Callable[[str], None] = lambda cause: None,
        gate: AdmissionGate | None = None,
    ) -> None:
        """
        @param on_open: run on the writer thread once the schema is up to
            date, before anything else: a check that raises stops the
            database from becoming ready (see L{when_ready}).
        @param on_write_failure: called on the reactor thread with the
            cause of every write that failed because of the database (a
            metric counts them).
        @param gate: bounds the jobs (reads and writes) waiting for this
            database; past it a call fails at once with C{busy}.
        """
        self.path = path
        self.gate = (
            gate if gate is not None
            else AdmissionGate(on_refused=lambda: on_write_failure("busy"))
        )
        self._reactor = reactor
        self._schema_package = schema_package
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._on_open = on_open
        self._on_write_failure = on_write_failure
        self._jobs: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        #: held while deciding whether the writer takes jobs, so no job is
        #: queued behind a writer that has already drained its queue
        self._queue_lock = threading.Lock()
        self._accepting = False
        self._refusal: DatabaseUnavailable = DatabaseClosed()
        self._writer: threading.Thread | None = None
        self._writer_done: Deferred[None] | None = None
        self._restart: Any = None
        self._readers = ThreadPool(minthreads=0, maxthreads=readers, name=f"sqlite-read:{path}")
        self._reader_local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._ready_waiters: list[Deferred[None]] | None = []
        self._ready_failure: Failure | None = None
        self._closed = True
        self._degraded: str | None = None
        self._probing = False
        self._last_probe = float("-inf")
        #: transactions committed by the writer, and writes they held
        self.commits = 0
        self.batched_writes = 0

    # -- lifecycle --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._closed = False
        self._start_writer(first=True)
        self._readers.start()

    def _start_writer(self, first: bool = False) -> None:
        self._restart = None
        self._writer_done = Deferred()
        with self._queue_lock:
            # nothing is queued while writes are refused, except perhaps a
            # stop meant for a writer that had already died
            while not self._jobs.empty():
                self._jobs.get_nowait()
            self._accepting = True
        self._writer = threading.Thread(
            target=self._writer_main, args=(first,), name=f"sqlite-write:{self.path}",
            daemon=True,
        )
        self._writer.start()

    def stopService(self) -> Deferred[None]:
        if self._closed:
            # already stopping or stopped (a test, then its cleanup)
            return self._writer_done or succeed(None)
        super().stopService()
        self._closed = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        self._restart = None
        done = self._writer_done
        if done is None:
            # the writer ended already (it could not open the file)
            done = succeed(None)
        else:
            self._jobs.put(_STOP)

        def close_readers(result: object) -> object:
            self._readers.stop()
            with self._reader_lock:
                for conn in self._reader_connections:
                    conn.close()
                self._reader_connections.clear()
            return result

        return done.addBoth(close_readers)

    def when_ready(self) -> Deferred[None]:
        """
        A Deferred that fires once the schema is up to date.
        """
        if self._ready_failure is not None:
            return fail(self._ready_failure)
        if self._ready_waiters is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        d = Deferred()
        self._ready_waiters.append(d)
        return d

    def _fire_ready(self, failure: Failure | None) -> None:
        waiters, self._ready_waiters = self._ready_waiters or [], None
        self._ready_failure = failure
        for d in waiters:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)

    # -- health -----------------------------------------------------------

    def health(self) -> str:
        """
        C{"ok"}, or C{"degraded"} while the last write (or probe) failed
        because of the database. While degraded, asking starts a probe (at
        most one per L{PROBE_INTERVAL}), so the answer heals by itself
        once the cause is gone even when nothing else writes.
        """
        if self._closed or not self._accepting:
            return "degraded"
        if self._degraded is not None:
            self._maybe_probe()
            return "degraded"
        return "ok"

    def degraded_cause(self) -> str | None:
        """
        Why the database is degraded, or C{None}.
        """
        if self._closed:
            return "stopped"
        if not self._accepting:
            return self._refusal.cause
        return self._degraded

    def _maybe_probe(self) -> None:
        now = self._reactor.seconds()
        if self._probing or now - self._last_probe < PROBE_INTERVAL:
            return
        self._probing = True
        self._last_probe = now

        def done(result: object) -> None:
            self._probing = False

        self._enqueue(_probe, ()).addBoth(done)

    # -- the public API ---------------------------------------------------

    def write(self, fn: Callable[..., T], *args: Any, size: int = 0) -> Deferred[T]:
        """
        Run C{fn(connection, *args)} on the writer thread inside a
        transaction; the Deferred fires after the commit that made it
        durable, with C{fn}'s result, or fails with what C{fn} raised
        (its changes rolled back, other writes unaffected), or with
        L{DatabaseUnavailable} if the database could not store it (disk
        full, locked, stopped, or too many jobs already waiting: see
        L{AdmissionGate}): then nothing of it was stored.

        @param size: the bytes the job carries (an envelope), counted by
            the gate while it waits.
        """
        return self.gate.run(
            size, lambda: self._enqueue(fn, args).addErrback(self._count_failure)
        )

    def _enqueue(self, fn: Callable[..., T], args: tuple[Any, ...]) -> Deferred[T]:
        with self._queue_lock:
            if self._closed or not self._accepting:
                return fail(DatabaseClosed() if self._closed else self._refusal)
            d: Deferred[T] = Deferred()
            self._jobs.put((fn, args, d))
        return d

    def _count_failure(self, failure: Failure) -> Failure:
        if isinstance(failure.value, DatabaseUnavailable):
            self._on_write_failure(failure.value.cause)
        return failure

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{fn(connection, *args)} on a reader thread, in one read
        transaction (a consistent snapshot).
        """
        if self._closed:
            return fail(DatabaseClosed())
        return self.gate.run(
            0,
            lambda: self.when_ready().addCallback(
                lambda _: deferToThreadPool(self._reactor, self._readers, self._read_job, fn, args)
            ),
        )

    # -- threads ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            timeout=self._busy_timeout,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_job(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = getattr(self._reader_local, "conn", None)
        try:
            if conn is None:
                conn = self._reader_local.conn = self._connect()
                with self._reader_lock:
                    self._reader_connections.append(conn)
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            if fault_cause(e) is None:
                raise rejected(e) from None
            raise unavailable(e) from None

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            upgrade(conn, self._schema_package)
            conn.execute("CREATE TABLE IF NOT EXISTS kez_health_probe (filler BLOB)")
            if self._on_open is not None:
                self._on_open(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _writer_main(self, first: bool) -> None:
        call = self._reactor.callFromThread
        clean = False
        died = ""
        refusal: DatabaseUnavailable | None = None
        conn: sqlite3.Connection | None = None
        #: jobs taken off the queue and not yet answered
        in_hand: list[_Job] = []
        try:
            try:
                conn = self._open_writer()
            except Exception as e:
                if isinstance(e, sqlite3.Error):
                    # the driver's error, as storage says it: why, in one word
                    failure = Failure(
                        DatabaseUnavailable(fault_cause(e) or "cannot_open", str(e))
                    )
                else:
                    failure = Failure()
                    failure.cleanFailure()
                if first:
                    call(self._fire_ready, failure)
                    refusal = unavailable(e, "cannot_open")
                    clean = True
                    return
                self.log.warn("cannot reopen the database {path}: {error}",
                              path=self.path, error=str(e))
                conn = None
            else:
                if first:
                    call(self._fire_ready, None)
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    clean = True
                    break
                batch = [job]
                while len(batch) < self._max_batch:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        # finish what was queued before the stop, then stop
                        self._jobs.put(_STOP)
                        break
                    batch.append(more)
                in_hand = batch
                conn, outcomes, cause = self._run_guarded(conn, batch)
                in_hand = []
                call(self._deliver, outcomes, cause)
        except BaseException as e:
            # nothing should get here; if something does, the thread ends,
            # its jobs fail (below) and _writer_ended starts a new one
            died = f"{type(e).__name__}: {e}"
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
            if refusal is None:
                refusal = (
                    DatabaseClosed("the database stopped") if clean
                    else DatabaseUnavailable("stopped", "the database writer stopped; restarting")
                )
            if in_hand:
                failure = Failure(refusal)
                call(self._deliver, [(d, False, failure) for _fn, _args, d in in_hand],
                     refusal.cause)
            self._stop_accepting(refusal)
            call(self._writer_ended, clean, died)

    def _stop_accepting(self, refusal: DatabaseUnavailable) -> None:
        """
        Refuse new writes with C{refusal} and fail every queued one with it
        at once: no Deferred waits on a writer that is gone.
        """
        with self._queue_lock:
            self._accepting = False
            self._refusal = refusal
            leftovers = []
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not _STOP:
                    leftovers.append((job[2], False, Failure(refusal)))
        if leftovers:
            self._reactor.callFromThread(self._deliver, leftovers, refusal.cause)

    def _writer_ended(self, clean: bool, died: str = "") -> None:
        done, self._writer_done = self._writer_done, None
        if done is not None:
            done.callback(None)
        if not clean and not self._closed:
            # something no SQLite error explains ended the thread: say so,
            # refuse writes meanwhile (done already), and start a new one
            self.log.critical("the database writer of {path} stopped ({error}); restarting it",
                              path=self.path, error=died or "unknown")
            self._degraded = "stopped"
            self._restart = self._reactor.callLater(PROBE_INTERVAL, self._start_writer)

    def _run_guarded(
        self, conn: sqlite3.Connection | None, batch: list[_Job]
    ) -> tuple[sqlite3.Connection | None, list[_Outcome], str | None]:
        """
        Run one batch, whatever happens: returns the connection to use next
        (C{None} to reopen), each job's outcome, and the cause if the
        database failed the batch.
        """
        if conn is None:
            try:
                conn = self._open_writer()
            except Exception as e:
                refused = unavailable(e, fault_cause(e) or "cannot_open")
                failed: list[_Outcome] = [
                    (d, False, Failure(refused)) for _fn, _args, d in batch
                ]
                return None, failed, refused.cause
        error: DatabaseUnavailable | None
        try:
            outcomes, error = self._run_batch(conn, batch)
        except BaseException as e:
            # a bug rather than a fault; still, never leave a Deferred waiting
            self.log.failure("the database writer failed a batch")
            outcomes, error = [(d, None, None) for _fn, _args, d in batch], unavailable(e)
        if error is None:
            return conn, outcomes, None
        self.log.warn("database write failed ({cause}): {error}", cause=error.cause,
                      error=error.message)
        conn = self._rollback(conn)
        failure = Failure(error)
        all_failed: list[_Outcome] = [
            (d, ok, result) if ok is False else (d, False, failure)
            for d, ok, result in outcomes
        ]
        return conn, all_failed, error.cause

    def _rollback(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        """
        End whatever transaction is open; a connection that cannot even
        roll back is closed, to be reopened for the next batch.
        """
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return conn
        except sqlite3.Error as e:
            self.log.warn("rollback failed, reopening the database: {error}", error=str(e))
            try:
                conn.close()
            except sqlite3.Error:
                pass
            return None

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[_Outcome], DatabaseUnavailable | None]:
        """
        The batch in one transaction. On a fault of the database, the
        outcomes so far (jobs that failed on their own keep their error;
        the rest are marked C{None}) and the fault; the caller rolls back.
        """
        outcomes: list[_Outcome] = []

        def faulted(e: BaseException) -> tuple[list[_Outcome], DatabaseUnavailable]:
            done = {id(d) for d, _ok, _r in outcomes}
            rest = [(d, None, None) for _fn, _args, d in batch if id(d) not in done]
            return outcomes + rest, unavailable(e)

        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            return faulted(e)
        for fn, args, d in batch:
            try:
                conn.execute("SAVEPOINT job")
            except sqlite3.Error as e:
                return faulted(e)
            try:
                result = fn(conn, *args)
            except BaseException as e:
                if fault_cause(e) is not None:
                    # the disk, the lock or the file failed, not this job;
                    # SQLite may have rolled the whole transaction back
                    return faulted(e)
                failure = _own_failure(e)
                if not conn.in_transaction:
                    # the job ended the transaction itself: its error is its
                    # own, the others' work is gone with the transaction
                    outcomes.append((d, False, failure))
                    return faulted(DatabaseUnavailable("other", "a write ended the transaction"))
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error as e2:
                    outcomes.append((d, False, failure))
                    return faulted(e2)
                outcomes.append((d, False, failure))
            else:
                try:
                    conn.execute("RELEASE job")
                except sqlite3.Error as e:
                    return faulted(e)
                outcomes.append((d, True, result))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            return [(d, None, None) if ok else (d, ok, r) for d, ok, r in outcomes], unavailable(e)
        self.commits += 1
        self.batched_writes += len(batch)
        return outcomes, None

    def _deliver(self, outcomes: list[_Outcome], cause: str | None = None) -> None:
        if cause is None:
            if self._degraded is not None:
                self.log.info("the database {path} works again", path=self.path)
            self._degraded = None
        else:
            self._degraded = cause
        for d, ok, result in outcomes:
            if ok:
                d.callback(result)
            else:
                d.errback(result)


__all__ = ["BUSY_TIMEOUT", "DatabaseClosed", "DatabaseUnavailable", "SQLiteDatabase"]
