"""
A plain C{twistd -n echoplus} (and a server with C{--broker memory})
imports none of the optional dependencies: each is loaded only by the
option that needs it.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO, twistd_environment

#: Top-level modules of the optional extras (redis, websocket, bench, test).
OPTIONAL = ("txredisapi", "hiredis", "websockets", "playwright", "uvloop", "Cython")

_PROBE = """
import sys
from twisted.internet import reactor
from echoplus.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[1:])
service = makeService(options)
service.privilegedStartService()
service.startService()
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(%r))
service.stopService()
print(" ".join(loaded))
"""


class OptionalImportTests(SynchronousTestCase):
    """
    Optional dependencies stay unimported until an option asks for them.
    """

    def _loaded(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE % (OPTIONAL,), *arguments],
            capture_output=True,
            text=True,
            env=twistd_environment(),
            cwd=str(REPO),
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def test_plain_server(self) -> None:
        """
        The default server (line echo) imports none of them.
        """
        self.assertEqual(self._loaded("--listen", "tcp:0:interface=127.0.0.1"), "")

    def test_memory_broker(self) -> None:
        """
        pubsub on the memory broker imports no Redis client.
        """
        self.assertEqual(
            self._loaded(
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--processor",
                "pubsub",
                "--broker",
                "memory",
            ),
            "",
        )

    def test_redis_broker_imports_its_client(self) -> None:
        """
        The probe can see an import: --broker redis:// loads txredisapi.
        """
        self.assertIn(
            "txredisapi",
            self._loaded(
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--broker",
                "redis://127.0.0.1:1",
            ),
        )
