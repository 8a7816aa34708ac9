"""
One PostgreSQL database, used from the reactor through asyncpg.

asyncpg is an asyncio driver: on Twisted's asyncio reactor both run on one
event loop, so a query is a coroutine on the reactor thread, never a
thread. A pool of connections lets independent requests overlap; the
database, not this process, serialises what must be serialised (unique
constraints, row locks, advisory locks), which is what lets several
chat-server processes share one database.

Durability is PostgreSQL's: a write's Deferred fires after its COMMIT
returned, which with the default C{synchronous_commit = on} means the WAL
is flushed. The message store batches concurrent sends into one call
(L{kezchat.storage.postgres.messages.GroupCommit}), and PostgreSQL flushes
concurrent commits together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from kezchat.compat.aio import deferred_from_coroutine, is_asyncio_reactor
from kezchat.startup import StartupError
from kezchat.storage.dburl import is_postgres_url, pool_settings, redacted
from kezchat.storage.errors import DatabaseClosed, DatabaseUnavailable, Rejected
from kezchat.storage.gate import AdmissionGate
from kezchat.storage.postgres.incomplete import refuse_if_marked
from kezchat.storage.postgres.schema import upgrade

T = TypeVar("T")

#: seconds a call waits for a free connection of the pool: past it the
#: database is too busy, and the client hears so (503 busy) instead of
#: waiting on. Longer than a connection attempt may take (10 s), so an
#: unreachable database fails with its own cause first.
ACQUIRE_TIMEOUT = 15.0


class _OneLine(logging.Handler):
    """
    asyncpg's pool logs through the standard library, with a traceback per
    reconnection attempt while the database is down; here that becomes one
    line in Twisted's log.
    """

    log = Logger(namespace="asyncpg")

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.log.warn(
            "{message}{error}",
            message=record.getMessage(),
            error=f": {error}" if error is not None else "",
        )


def _route_driver_logs() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(h, _OneLine) for h in pool_log.handlers):
        pool_log.addHandler(_OneLine())
        pool_log.propagate = False


class WrongReactorError(StartupError):
    """
    PostgreSQL was configured but the reactor is not the asyncio one:
    twistd ends with this one line.
    """


def fault_cause(error: BaseException) -> str | None:
    """
    The L{DatabaseUnavailable} cause of C{error} when it is the database's
    fault (unreachable, restarting, full, out of connections), or C{None}
    when it is the statement's (a bug, bad data): those stay as they are.
    """
    import asyncpg

    if isinstance(error, DatabaseUnavailable):
        return error.cause
    if isinstance(error, asyncpg.DiskFullError):
        return "disk_full"
    if isinstance(error, asyncpg.OutOfMemoryError):
        return "no_memory"
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return "readonly"  # a standby, or default_transaction_read_only
    if isinstance(
        error,
        (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
         asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError),
    ):
        return "cannot_open"
    if isinstance(
        error,
        (asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
         asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError),
    ):
        return "busy"
    if isinstance(
        error,
        (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
         asyncpg.OperatorInterventionError, OSError, TimeoutError),
    ):
        return "io"
    return None


def _is_driver_error(error: BaseException) -> bool:
    """
    Whether C{error} is PostgreSQL refusing the statement (bad data, a
    broken constraint), as opposed to what the caller's own code raised.
    """
    import asyncpg

    return isinstance(error, (asyncpg.PostgresError, asyncpg.DataError))


class PostgresDatabase(Service):
    """
    A service owning a pool of connections to one PostgreSQL database.

    @ivar path: the URL without its password (what logs may show).
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        schema_package: str = "kezchat.storage.postgres",
        close_timeout: float = 5.0,
        on_open: Callable[[Any], Awaitable[None]] | None = None,
        on_write_failure: Callable[[str], None] = lambda cause: None,
        gate: AdmissionGate | None = None,
        acquire_timeout: float = ACQUIRE_TIMEOUT,
    ) -> None:
        """
        @param on_open: awaited with a connection once the schema is up to
            date, before anything else uses the database (the server
            domain check); what it raises fails L{when_ready}.
        @param on_write_failure: called with the cause whenever the
            database fails an operation (a metric).
        @param gate: bounds the calls waiting for this database (in the
            group commit, for a connection, in flight); past it a call
            fails at once with C{busy}.
        @param acquire_timeout: seconds a call waits for a free connection
            of the pool before failing with C{busy}.
        """
        if not is_asyncio_reactor(reactor):
            raise WrongReactorError(
                "PostgreSQL storage needs Twisted's asyncio reactor: run `twistd -r asyncio ...`"
            )
        self.url = url
        self.path = redacted(url)
        self._dsn, self.min_size, self.max_size = pool_settings(url)
        self._reactor = reactor
        self._schema_package = schema_package
        self._close_timeout = close_timeout
        self._on_open = on_open
        self._on_write_failure = on_write_failure
        self.gate = (
            gate if gate is not None
            else AdmissionGate(on_refused=lambda: on_write_failure("busy"))
        )
        self._acquire_timeout = acquire_timeout
        self._pool: Any = None
        self._ready: asyncio.Future[None] | None = None
        self._closed = True
        self._degraded: str | None = None
        self._probing = False

    # -- lifecycle --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._closed = False
        # the asyncio reactor runs the current event loop
        self._ready = asyncio.ensure_future(self._open())
        # failures are reported through when_ready (and logged by the owner)
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _open(self) -> None:
        import asyncpg

        _route_driver_logs()
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                # an unreachable host fails a connection attempt in 10 s, and
                # a statement that takes over a minute is cut: no request
                # waits forever on the database
                timeout=10,
                command_timeout=60,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StartupError(
                f"cannot connect to PostgreSQL at {self.path} ({str(e) or type(e).__name__}):"
                " check that it runs and accepts connections from here, and the URL's"
                " host, port, user, password and database name"
            ) from None
        try:
            async with pool.acquire() as conn:
                version = await upgrade(conn, self._schema_package)
                await refuse_if_marked(conn, self._schema_package, self.path)
                if self._on_open is not None:
                    await self._on_open(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self.log.info(
            "PostgreSQL {path}: schema version {version}, pool of {low}-{high} connections",
            path=self.path, version=version, low=self.min_size, high=self.max_size,
        )

    def stopService(self) -> Deferred[None]:
        if self._closed:
            return succeed(None)
        super().stopService()
        self._closed = True
        return deferred_from_coroutine(self._close())

    async def _close(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._close_timeout)
        except (TimeoutError, OSError):
            pool.terminate()

    def when_ready(self) -> Deferred[None]:
        """
        A Deferred that fires once the schema is up to date, or fails if
        the database cannot be reached or is newer than this code.
        """
        if self._ready is None:
            return fail(DatabaseClosed("the database is not running"))
        return Deferred.fromFuture(asyncio.shield(self._ready))

    # -- the public API ---------------------------------------------------

    def run(
        self, fn: Callable[..., Awaitable[T]], *args: Any, size: int = 0, admitted: bool = False
    ) -> Deferred[T]:
        """
        Run C{await fn(connection, *args)} on a pooled connection, outside
        any explicit transaction (each statement commits on its own).

        @param size: the bytes the call carries, counted by the gate while
            it waits.
        @param admitted: the caller already holds the gate's room for this
            work (a batch of jobs it admitted one by one).
        """
        return self._submit(fn, args, False, size, admitted)

    def transaction(
        self, fn: Callable[..., Awaitable[T]], *args: Any, size: int = 0, admitted: bool = False
    ) -> Deferred[T]:
        """
        Run C{await fn(connection, *args)} in one transaction; the Deferred
        fires after the commit, or fails with what C{fn} raised (rolled
        back). C{size} and C{admitted} as for L{run}.
        """
        return self._submit(fn, args, True, size, admitted)

    def _submit(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        transaction: bool,
        size: int,
        admitted: bool,
    ) -> Deferred[T]:
        if self._closed or self._ready is None:
            return fail(DatabaseClosed("the database is not running"))
        if admitted:
            return deferred_from_coroutine(self._call(fn, args, transaction))
        return self.gate.run(
            size, lambda: deferred_from_coroutine(self._call(fn, args, transaction))
        )

    async def _call(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], transaction: bool
    ) -> T:
        ready = self._ready
        if ready is None:
            raise DatabaseClosed("the database is not running")
        if not ready.done():
            await asyncio.shield(ready)
        ready.result()  # raises what opening the database raised
        pool = self._pool
        if pool is None:
            raise DatabaseClosed("the database stopped")
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError:
            self._on_write_failure("busy")
            raise DatabaseUnavailable(
                "busy", f"no database connection free within {self._acquire_timeout:g} s",
                retry_after=1,
            ) from None
        except Exception as e:
            translated = self._translate(e)
            if translated is e:
                raise
            raise translated from e
        try:
            if not transaction:
                result = await fn(conn, *args)
            else:
                async with conn.transaction():
                    result = await fn(conn, *args)
        except Exception as e:
            translated = self._translate(e)
            if translated is e:
                raise
            raise translated from e
        finally:
            await pool.release(conn)
        self._degraded = None
        return result

    def _translate(self, e: Exception) -> Exception:
        """
        A driver's exception as a storage error; the caller's own
        exceptions come back as they are. Faults are counted and make the
        database degraded until a call succeeds.
        """
        cause = fault_cause(e)
        if cause is None:
            if _is_driver_error(e):
                return Rejected(f"PostgreSQL refused the write: {e}")
            return e
        self._degraded = cause
        self._on_write_failure(cause)
        if isinstance(e, DatabaseUnavailable):
            return e
        # a broken connection may have committed before it broke:
        # "unavailable" here means "unknown, retry" (idempotency keys make
        # the retry safe)
        return DatabaseUnavailable(cause, f"PostgreSQL: {str(e) or type(e).__name__}")

    # -- health -----------------------------------------------------------

    def health(self) -> str:
        """
        C{"ok"}, or C{"degraded"} while the last operation failed for the
        database's own reasons; while degraded, each call probes (one
        C{SELECT 1} at a time), so healing shows even when nobody writes.
        """
        if self._degraded is None:
            return "ok"
        if not self._probing and not self._closed:
            self._probing = True

            async def probe(conn: Any) -> None:
                await conn.fetchval("SELECT 1")

            def done(_: object) -> None:
                self._probing = False

            self.run(probe).addBoth(done)
        return "degraded"

    def degraded_cause(self) -> str | None:
        return self._degraded


__all__ = [
    "DatabaseClosed",
    "PostgresDatabase",
    "WrongReactorError",
    "fault_cause",
    "is_postgres_url",
    "pool_settings",
    "redacted",
]
