"""
kezchat's tests: run with C{trial --reactor=asyncio tests}.

C{KEZ_TEST_NO_SKIP=1} turns a missing tool into a failure
(L{kezchat.testing.requirements}); C{KEZ_TEST_CLEAN_OUTPUT=1} fails the test during
which asyncio or Python reports a leak (L{tests.cleanoutput}).
"""

from tests import cleanoutput

cleanoutput.install()
