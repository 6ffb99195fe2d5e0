"""
The web chat example (examples/web-chat/index.html) in a real headless
browser: Debian's chromium driven by Playwright, against a real twistd
serving websocket and line listeners with pubsub.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO, Twistd

PAGE_DIRECTORY = REPO / "examples" / "web-chat"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _browser_or_skip() -> Any:
    """
    Playwright's sync API, or a skip naming what is missing.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SkipTest("playwright is not installed (pip install playwright)") from None
    if not Path(CHROMIUM).exists():
        raise SkipTest("no chromium at /usr/bin/chromium (apt-get install chromium)")
    return sync_playwright


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WebChatTests(SynchronousTestCase):
    """
    Two browser pages in one room; a TCP client on the same topic.
    """

    def setUp(self) -> None:
        self.sync_playwright = _browser_or_skip()
        handler = functools.partial(_QuietHandler, directory=str(PAGE_DIRECTORY))
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.addCleanup(self.http.server_close)
        self.addCleanup(self.http.shutdown)
        self.origin = f"http://127.0.0.1:{self.http.server_address[1]}"
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        config = Path(directory, "chat.toml")
        config.write_text(
            f"""
processors = ["pubsub"]

[[listen]]
endpoint = "tcp:0:interface=127.0.0.1"
framing = "websocket"
ws_origins = ["{self.origin}"]

[[listen]]
endpoint = "tcp:0:interface=127.0.0.2"
framing = "line"
"""
        )
        self.server = Twistd(["--config", str(config)], listeners=2)
        self.addCleanup(self.server.stop)
        ports = {host: port for host, port in self.server.addresses}  # type: ignore[misc]
        self.ws_port = ports["127.0.0.1"]
        self.line_port = ports["127.0.0.2"]
        self.profile = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.profile, True)

    def page_url(self, nick: str) -> str:
        server = f"ws://127.0.0.1:{self.ws_port}/"
        return f"{self.origin}/?server={server}&room=test&nick={nick}"

    def open_pages(self, context: Any) -> tuple[Any, Any]:
        pages = []
        for nick in ("alice", "bob"):
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(self.page_url(nick))
            page.click("#join")
            page.wait_for_selector("body[data-joined=test]")
            pages.append(page)
        return pages[0], pages[1]

    def say(self, page: Any, text: str) -> None:
        page.fill("#text", text)
        page.click("#send")

    def see(self, page: Any, text: str) -> None:
        page.wait_for_selector(f"#log li:text-is('{text}')")

    def launch(self, playwright: Any) -> Any:
        return playwright.chromium.launch_persistent_context(
            self.profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )

    def test_two_pages_see_each_other(self) -> None:
        """
        Two pages join a room and see each other's messages (and their own).
        """
        with self.sync_playwright() as playwright:
            context = self.launch(playwright)
            try:
                alice, bob = self.open_pages(context)
                self.say(alice, "hello from alice")
                self.see(bob, "alice: hello from alice")
                self.see(alice, "alice: hello from alice")
                self.say(bob, "hi alice")
                self.see(alice, "bob: hi alice")
            finally:
                context.close()

    def test_tcp_client_in_the_same_topic(self) -> None:
        """
        A line client subscribed to the room's topic on the line listener
        of the same twistd sees the pages' messages, and they see its.
        """
        tcp = socket.create_connection(("127.0.0.2", self.line_port), timeout=10)
        self.addCleanup(tcp.close)
        lines = tcp.makefile("rb")
        tcp.sendall(b"SUB test\n")
        self.assertEqual(lines.readline(), b"OK SUB test\n")
        with self.sync_playwright() as playwright:
            context = self.launch(playwright)
            try:
                alice, bob = self.open_pages(context)
                self.say(alice, "hello terminal")
                self.see(bob, "alice: hello terminal")
                self.assertEqual(lines.readline(), b"MSG test alice: hello terminal\n")
                tcp.sendall(b"PUB test carol: hello browsers\n")
                # A subscribed publisher reads its own MSG first (memory
                # broker: the push joins the batch before the reply).
                self.assertEqual(
                    lines.readline(), b"MSG test carol: hello browsers\n"
                )
                self.assertEqual(lines.readline(), b"OK PUB 3\n")
                self.see(alice, "carol: hello browsers")
                self.see(bob, "carol: hello browsers")
            finally:
                context.close()
