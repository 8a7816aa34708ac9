"""
One SQLite database, used from the reactor without ever blocking it.

Writes go to a single writer thread that owns the only writing connection.
Whatever writes are queued when it wakes up run as one transaction (each in
its own savepoint, so one failing write does not undo the others), then one
commit with C{synchronous=FULL} makes them all durable: group commit, the
way to get throughput without weakening durability. Reads run on a small
pool of threads with their own connections; in WAL mode they never wait for
the writer.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from kezchat.storage.sqlite.schema import upgrade

T = TypeVar("T")
_STOP = object()


class DatabaseClosed(Exception):
    """
    The database was used after its service stopped.
    """


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
        reactor: IReactorFromThreads,
        *,
        readers: int = 3,
        schema_package: str = "kezchat.storage.sqlite",
        max_batch: int = 512,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._schema_package = schema_package
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_done: Deferred[None] | None = None
        self._readers = ThreadPool(minthreads=0, maxthreads=readers, name=f"sqlite-read:{path}")
        self._reader_local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._ready_waiters: list[Deferred[None]] | None = []
        self._ready_failure: Failure | None = None
        self._closed = True
        #: transactions committed by the writer, and writes they held
        self.commits = 0
        self.batched_writes = 0

    # -- lifecycle --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._closed = False
        self._writer_done = Deferred()
        self._writer = threading.Thread(
            target=self._writer_main, name=f"sqlite-write:{self.path}", daemon=True
        )
        self._writer.start()
        self._readers.start()

    def stopService(self) -> Deferred[None]:
        if self._closed:
            # already stopping or stopped (a test, then its cleanup)
            return self._writer_done or succeed(None)
        super().stopService()
        self._closed = True
        self._jobs.put(_STOP)
        done = self._writer_done
        assert done is not None

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

    # -- the public API ---------------------------------------------------

    def write(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{fn(connection, *args)} on the writer thread inside a
        transaction; the Deferred fires after the commit that made it
        durable, with C{fn}'s result, or fails with what C{fn} raised
        (its changes rolled back, other writes unaffected).
        """
        if self._closed or self._writer is None:
            return fail(DatabaseClosed("the database is not running"))
        d: Deferred[T] = Deferred()
        self._jobs.put((fn, args, d))
        return d

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{fn(connection, *args)} on a reader thread, in one read
        transaction (a consistent snapshot).
        """
        if self._closed:
            return fail(DatabaseClosed("the database is not running"))
        return self.when_ready().addCallback(
            lambda _: deferToThreadPool(self._reactor, self._readers, self._read_job, fn, args)
        )

    # -- threads ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _read_job(self, fn: Callable[..., T], args: tuple) -> T:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._reader_local.conn = self._connect()
            with self._reader_lock:
                self._reader_connections.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("COMMIT")

    def _writer_main(self) -> None:
        call = self._reactor.callFromThread
        try:
            conn = self._connect()
            upgrade(conn, self._schema_package)
        except Exception:
            failure = Failure()
            failure.cleanFailure()
            call(self._fire_ready, failure)
            self._fail_queued(failure)
            call(self._writer_done.callback, None)
            return
        call(self._fire_ready, None)
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    break
                batch = [job]
                stopping = False
                while len(batch) < self._max_batch:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                        break
                    batch.append(more)
                call(self._deliver, self._run_batch(conn, batch))
                if stopping:
                    break
        finally:
            conn.close()
            self._fail_queued(Failure(DatabaseClosed("the database stopped")))
            call(self._writer_done.callback, None)

    def _fail_queued(self, failure: Failure) -> None:
        leftovers = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                leftovers.append((job[2], False, failure))
        if leftovers:
            self._reactor.callFromThread(self._deliver, leftovers)

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> list:
        outcomes = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            failure = Failure()
            failure.cleanFailure()
            return [(d, False, failure) for _fn, _args, d in batch]
        for fn, args, d in batch:
            conn.execute("SAVEPOINT job")
            try:
                result = fn(conn, *args)
            except Exception:
                failure = Failure()
                failure.cleanFailure()
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((d, False, failure))
            else:
                conn.execute("RELEASE job")
                outcomes.append((d, True, result))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            failure = Failure()
            failure.cleanFailure()
            conn.execute("ROLLBACK")
            return [(d, False, failure) for d, _ok, _r in outcomes]
        self.commits += 1
        self.batched_writes += len(batch)
        return outcomes

    def _deliver(self, outcomes: list) -> None:
        for d, ok, result in outcomes:
            if ok:
                d.callback(result)
            else:
                d.errback(result)


__all__ = ["DatabaseClosed", "SQLiteDatabase"]
