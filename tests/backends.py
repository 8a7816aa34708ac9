"""
Running one test suite against both storage backends.

A suite is written once against whatever C{--db} L{tests.support} hands
it; L{on_postgresql} adds, next to each given case, a subclass that runs
the very same tests with C{db_backend = "postgresql"} (a fresh database in
the test run's throwaway cluster, L{kezchat.testing.pgsupport}).
"""

from __future__ import annotations

from typing import Any


def on_postgresql(namespace: dict[str, Any], *cases: type) -> None:
    """
    Define C{<Case>OnPostgreSQL} in C{namespace} (a test module's
    C{globals()}) for each of C{cases}.
    """
    for case in cases:
        name = f"{case.__name__}OnPostgreSQL"
        namespace[name] = type(
            name,
            (case,),
            {"db_backend": "postgresql", "__module__": case.__module__, "__qualname__": name},
        )
