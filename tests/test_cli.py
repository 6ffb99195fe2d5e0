"""
Tests for the C{echoplus} command itself (its subcommands have their own).
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import twistd_environment


class BrokenPipeTests(SynchronousTestCase):
    def test_reader_gone_is_quiet(self) -> None:
        """
        When whatever reads the command's output goes away (C{| head}), the
        command exits non-zero without a traceback.
        """
        process = subprocess.Popen(
            [sys.executable, "-m", "echoplus", "processors"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=twistd_environment(),
        )
        assert process.stdout is not None
        process.stdout.close()
        _, errors = process.communicate(timeout=30)
        self.assertNotIn(b"Traceback", errors)
        self.assertEqual(process.returncode, 1)
