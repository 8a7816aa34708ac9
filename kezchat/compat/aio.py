"""
Glue between Twisted and asyncio on Twisted's asyncio reactor.

nats-py is asyncio; kezchat is Twisted. On the asyncio reactor both share
one event loop, but their awaitables do not mix: a coroutine awaiting a
Deferred fails with "Task got bad yield", and a Twisted coroutine awaiting
an asyncio future fails with "await wasn't used with future". Every
crossing goes through one of the helpers here.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from kezchat.errors import NatsSetupError

T = TypeVar("T")


class WrongReactorError(NatsSetupError, RuntimeError):
    """
    NATS was configured but the running reactor is not the asyncio one.
    """


def is_asyncio_reactor(reactor: object) -> bool:
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    return isinstance(reactor, AsyncioSelectorReactor)


def require_asyncio_reactor(reactor: object) -> None:
    """
    Refuse to go on unless C{reactor} is Twisted's asyncio reactor.

    On any other reactor nothing drives the asyncio loop: nats-py would
    never connect and shutdown would wait on it forever. A clear error at
    start-up beats a silent hang.
    """
    if not is_asyncio_reactor(reactor):
        raise WrongReactorError(
            "NATS support needs Twisted's asyncio reactor: run `twistd -r asyncio ...`"
            f" (the running reactor is {type(reactor).__module__}.{type(reactor).__name__})"
        )


def _map_cancellation(failure: Failure) -> Failure:
    # asyncio's CancelledError is a BaseException unknown to Twisted; left
    # as is it surfaces as "Unhandled error" wherever a request is dropped.
    if failure.check(asyncio.CancelledError):
        return Failure(CancelledError())
    return failure


def deferred_from_coroutine(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """
    Run an asyncio coroutine as a task; its result as a Deferred.

    Cancelling the Deferred cancels the task.
    """
    d: Deferred[T] = Deferred.fromFuture(asyncio.ensure_future(coro))
    d.addErrback(_map_cancellation)
    return d


async def resolve(value: Awaitable[T] | Deferred[T] | T) -> T:
    """
    From asyncio code, wait for C{value}: a Deferred, an awaitable, or a
    plain value (so callers may hand us a synchronous lookup too).
    """
    if isinstance(value, Deferred):
        return await value.asFuture(asyncio.get_running_loop())
    if inspect.isawaitable(value):
        return await value
    return value


async def within(step: Awaitable[Any], timeout: float) -> bool:
    """
    Await C{step} for at most C{timeout} seconds: C{True} when it finished
    (its exception, if any, is raised), C{False} when it was cancelled and
    left behind.

    Unlike C{asyncio.wait_for}, this never waits for a cancelled step to
    end: nats-py swallows C{CancelledError} in places (C{close}, C{drain},
    C{flush}), and on Python 3.11 C{wait_for} then waits for the step as
    long as it likes, so a shutdown bounded "by a timeout" could hang.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        task.result()
        return True
    task.cancel()
    # whatever it ends with later is retrieved here, not printed at exit
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return False


async def cancel_until_done(task: asyncio.Task[Any], every: float = 0.5) -> None:
    """
    Cancel C{task} and wait for it to end, cancelling again every C{every}
    seconds: a cancellation that nats-py swallowed mid-request is not the
    last word. Bound the wait with L{within}.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()
