"""
C{python -m kezchat.cli}: the same as the C{kez-chat} console script.
"""

import sys

from kezchat.cli.main import main

sys.exit(main())
