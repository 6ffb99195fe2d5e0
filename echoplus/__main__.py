"""
C{python -m echoplus}: the same as the C{echoplus} command.
"""

import sys

from echoplus.cli import main

sys.exit(main())
