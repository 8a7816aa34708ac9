"""
Replaying a whole key directory: what an auditor (C{kezchat-admin log
verify} on the database, C{kez-chat audit} over HTTP) checks.

Every leaf must be a canonical, correctly signed registration on the log's
server; every handle and every key registered once; and the root of all
the leaves must be the one the signed head carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kezchat.keylog.merkle import MemoryTree
from kezchat.keylog.wire import Head, Registration, WireError, parse_leaf

#: problems reported in full; past this many, only counted
MAX_PROBLEMS = 100


@dataclass
class Replay:
    """
    The outcome of replaying leaves in order.

    @ivar handles: fqhn → (index, primary) of each registration.
    @ivar problems: what is wrong, one line each (empty: all is well).
    """

    tree: MemoryTree = field(default_factory=MemoryTree)
    handles: dict[str, tuple[int, str]] = field(default_factory=dict)
    primaries: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def size(self) -> int:
        return self.tree.size

    @property
    def root(self) -> bytes:
        return self.tree.root()

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def add(self, leaf: bytes, server: str | None = None) -> Registration | None:
        """
        Replay the next leaf; the registration it holds, if it is one.
        """
        index = self.tree.append(leaf)
        try:
            registration = parse_leaf(leaf)
        except WireError as e:
            self.problem(f"leaf {index}: {e}")
            return None
        if server is not None and registration.server != server:
            self.problem(f"leaf {index}: registers {registration.fqhn}, not on {server}")
        fqhn = registration.fqhn
        if fqhn in self.handles:
            self.problem(f"leaf {index}: {fqhn} was already registered at leaf "
                         f"{self.handles[fqhn][0]}")
        else:
            self.handles[fqhn] = (index, registration.primary)
        if registration.primary in self.primaries:
            self.problem(f"leaf {index}: {registration.primary} was already bound at leaf "
                         f"{self.primaries[registration.primary]}")
        else:
            self.primaries[registration.primary] = index
        return registration

    def check_head(self, head: Head) -> None:
        """
        The signed head must be the tree of exactly these leaves.
        """
        if head.size != self.size:
            self.problem(f"the signed head has {head.size} leaves, the log {self.size}")
        elif head.root != self.root:
            self.problem(f"the signed head's root {head.root.hex()} is not the root of the "
                         f"leaves, {self.root.hex()}")

    def summary(self, head: Head | None = None) -> dict[str, Any]:
        return {
            "ok": not self.problem_count,
            "size": self.size,
            "root": self.root.hex(),
            "handles": len(self.handles),
            **({"key": head.key, "head_ts": head.ts} if head is not None else {}),
            "problems": self.problems,
            "problem_count": self.problem_count,
        }


def replay(leaves: Iterable[bytes], server: str | None = None) -> Replay:
    result = Replay()
    for leaf in leaves:
        result.add(leaf, server)
    return result
