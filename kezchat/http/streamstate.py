"""
An SSE stream's state machine, as data: its L{Phase}s, the L{Input}s that
reach it, and L{BEHAVIOUR}, what each input does in each phase
(L{kezchat.http.sse.EventStream} looks every decision up there).
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """
    Where a stream is in its life. Flow control (paused or not) is the
    other, independent half of its state: see L{EventStream}.

    Transitions::

        start ──> LIVE ──(gap in seqs)──> READING ──> REPLAYING ──> LIVE
          └───────(resume)──────────────────^  ^──(more)──┘
        any ──(client gone, slow, shutdown)──> CLOSED
    """

    #: live messages are written as they are delivered
    LIVE = "live"
    #: a backlog page is being read from the store; live messages are held
    READING = "reading"
    #: the page is being written, as fast as the client reads; live
    #: messages are held
    REPLAYING = "replaying"
    #: released: nothing more is written or held
    CLOSED = "closed"


#: the phase changes a stream may make
TRANSITIONS = {
    Phase.LIVE: {Phase.READING, Phase.CLOSED},
    Phase.READING: {Phase.REPLAYING, Phase.CLOSED},
    Phase.REPLAYING: {Phase.READING, Phase.LIVE, Phase.CLOSED},
    Phase.CLOSED: set(),
}


class Input(enum.Enum):
    """
    What can happen to a stream (besides flow control, which only decides
    whether what is written goes out now or is queued).
    """

    #: the broker delivers a live message
    DELIVER = "deliver"
    #: the hub found the inbox ahead of the last event sent
    BEHIND = "behind"
    #: a backlog page was read from the store
    PAGE_READ = "page read"
    #: reading a backlog page failed
    PAGE_FAILED = "page failed"
    #: the transport takes writes again
    RESUMED = "resumed"
    #: the client went away, could not keep up, or the server stops
    RELEASED = "released"


class Do(enum.Enum):
    """
    What a stream does with an L{Input}, by its L{Phase}: L{BEHAVIOUR}.
    """

    #: write the message (or, if seqs skip one, hold it and catch up;
    #: one already sent is dropped)
    SEND = "send"
    #: keep the message aside until the replay is written
    HOLD = "hold"
    #: read the backlog after the last event sent (-> READING)
    CATCH_UP = "catch up"
    #: write the page as fast as the client reads it (-> REPLAYING)
    REPLAY = "replay"
    #: write more of the page being replayed
    PUMP = "pump"
    #: cut the connection: a reconnect resumes without a gap
    DISCONNECT = "disconnect"
    #: let go of everything (-> CLOSED)
    RELEASE = "release"
    #: nothing: the input does not concern this phase
    IGNORE = "ignore"
    #: cannot happen (only one page is read at a time, and only while
    #: READING); raises, rather than corrupting the order of events
    IMPOSSIBLE = "impossible"


#: the whole behaviour of a stream: for each phase, what each input does.
#: L{EventStream} looks every decision up here; C{tests/test_clocked.py}
#: drives each of the 24 pairs.
BEHAVIOUR: dict[Phase, dict[Input, Do]] = {
    Phase.LIVE: {
        Input.DELIVER: Do.SEND,
        Input.BEHIND: Do.CATCH_UP,
        Input.PAGE_READ: Do.IMPOSSIBLE,
        Input.PAGE_FAILED: Do.IMPOSSIBLE,
        Input.RESUMED: Do.IGNORE,
        Input.RELEASED: Do.RELEASE,
    },
    Phase.READING: {
        Input.DELIVER: Do.HOLD,
        Input.BEHIND: Do.IGNORE,
        Input.PAGE_READ: Do.REPLAY,
        Input.PAGE_FAILED: Do.DISCONNECT,
        Input.RESUMED: Do.IGNORE,
        Input.RELEASED: Do.RELEASE,
    },
    Phase.REPLAYING: {
        Input.DELIVER: Do.HOLD,
        Input.BEHIND: Do.IGNORE,
        Input.PAGE_READ: Do.IMPOSSIBLE,
        Input.PAGE_FAILED: Do.IMPOSSIBLE,
        Input.RESUMED: Do.PUMP,
        Input.RELEASED: Do.RELEASE,
    },
    Phase.CLOSED: {
        Input.DELIVER: Do.IGNORE,
        Input.BEHIND: Do.IGNORE,
        Input.PAGE_READ: Do.IGNORE,
        Input.PAGE_FAILED: Do.IGNORE,
        Input.RESUMED: Do.IGNORE,
        Input.RELEASED: Do.IGNORE,
    },
}
