"""
The Grafana dashboard against real metrics: Debian's C{prometheus} scrapes
a running C{twistd -n echoplus --metrics ...} under traffic, and every
PromQL expression of C{deploy/grafana-dashboard.json} must return data
through Prometheus's HTTP API.

Prometheus scrapes every second into temporary storage; Grafana's
variables are replaced the way Grafana would for "All" (C{$job},
C{$listener}) and for that scrape interval (C{$__rate_interval}: four
scrape intervals).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO, Twistd, receive_lines, stop_process

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
JOB = "echoplus"
SCRAPE_SECONDS = 1
#: How long the metrics may take to show every panel's data.
DEADLINE = 60.0

_VARIABLES = {
    "$__rate_interval": f"{4 * SCRAPE_SECONDS}s",
    "$job": ".*",
    "$listener": ".*",
}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """
    Every panel, those inside rows included.
    """
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_queries() -> list[tuple[str, str]]:
    """
    C{(panel title, PromQL expression)} for every target of the dashboard,
    with Grafana's variables replaced.
    """
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expression = target.get("expr")
            if expression:
                for name, value in _VARIABLES.items():
                    expression = expression.replace(name, value)
                queries.append((panel.get("title", "?"), expression))
    return queries


def label_value_queries() -> list[tuple[str, str, str]]:
    """
    C{(variable, metric, label)} for every C{label_values(metric, label)}
    variable of the dashboard.
    """
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if not isinstance(query, str):
            continue
        match = re.fullmatch(r"label_values\((\w+)(?:\{[^}]*\})?,\s*(\w+)\)", query)
        if match:
            found.append((variable["name"], match.group(1), match.group(2)))
    return found


def free_port() -> int:
    """
    A loopback port free at this moment (Prometheus cannot report the port
    it got for port 0).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Traffic:
    """
    Clients on a thread until stopped: one connection held open, and new
    connections sending good lines and one over C{--max-frame}.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=10) as held:
                while not self._stop.is_set():
                    with socket.create_connection(self.address, timeout=10) as sock:
                        sock.sendall(b"hello\n" * 5)
                        receive_lines(sock, 5)
                        sock.sendall(b"x" * 100 + b"\n")
                        receive_lines(sock, 1)
                    held.sendall(b"ping\n")
                    receive_lines(held, 1)
                    self._stop.wait(0.05)
        except OSError as error:  # reported by the test
            self.errors.append(error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class Prometheus:
    """
    A Prometheus server scraping C{target} every second, with temporary
    storage, on a free loopback port.
    """

    def __init__(self, target: str, directory: Path) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_SECONDS}s\n"
            f"  evaluation_interval: {SCRAPE_SECONDS}s\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n",
            encoding="utf-8",
        )
        self.log = directory / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> Any:
        """
        The C{data} of a JSON answer of the HTTP API.
        """
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise AssertionError(f"{url}: {answer}")
        return answer["data"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=2
                ).close()
                return
            except OSError:  # URLError and HTTP 503 included
                time.sleep(0.2)
        raise AssertionError(
            f"prometheus not ready within {timeout}s (exit {self.process.poll()}):\n"
            + self.log.read_text(errors="replace")
        )

    def stop(self) -> None:
        stop_process(self.process)


def _problem(result: Any) -> str | None:
    """
    Why an instant query's result is not data: empty, or not a number.
    """
    kind, values = result["resultType"], result["result"]
    if kind == "scalar":
        values = [{"value": values}]
    if not values:
        return "no data"
    for sample in values:
        if not math.isfinite(float(sample["value"][1])):
            return f"{sample.get('metric', {})} is {sample['value'][1]}"
    return None


class DashboardTests(SynchronousTestCase):
    """
    C{deploy/grafana-dashboard.json} meets a Prometheus.
    """

    def test_reading_the_dashboard(self) -> None:
        """
        The dashboard has queries, their variables are all replaced, and
        the variables' C{label_values} queries are found.
        """
        queries = dashboard_queries()
        self.assertGreater(len(queries), 10)
        for title, expression in queries:
            self.assertNotIn("$", expression, title)
        self.assertEqual(
            [name for name, _, _ in label_value_queries()], ["job", "listener"]
        )

    def test_every_panel_has_data(self) -> None:
        """
        Under traffic, every expression of every panel returns data (a
        finite number for each series), every metric it names exists, and
        so do the metrics and labels of the dashboard's variables.
        """
        if PROMETHEUS is None:
            raise SkipTest("prometheus is not installed (Debian: prometheus)")
        directory = Path(tempfile.mkdtemp(prefix="echoplus-prometheus-"))
        self.addCleanup(shutil.rmtree, directory, True)
        server = Twistd(
            [
                *("--listen", "tcp:0:interface=127.0.0.1"),
                *("--metrics", "tcp:0:interface=127.0.0.1"),
                *("--processor", "delay(seconds=0.002)"),
                *("--max-frame", "64"),
            ]
        )
        self.addCleanup(server.stop)
        [metrics] = server.wait_for(r"echoplus metrics on \S+ at (\S+)")
        prometheus = Prometheus(metrics.group(1), directory)
        self.addCleanup(prometheus.stop)
        traffic = Traffic(("127.0.0.1", server.port))
        self.addCleanup(traffic.stop)
        prometheus.wait_ready()
        problems = self.wait_for_data(prometheus, traffic)
        if problems:
            self.fail(
                f"the dashboard has no data after {DEADLINE:g}s of traffic:\n"
                + "\n".join(problems.values())
            )
        self.assertEqual(traffic.errors, [])
        # The same checks see a panel querying a metric that does not exist.
        typo = ("Typo", "sum(rate(echoplus_frames_recieved_total[4s]))")
        [missing, empty] = self.problems(prometheus, [typo], []).values()
        self.assertIn("queries echoplus_frames_recieved_total, which does not", missing)
        self.assertIn("no data", empty)

    def wait_for_data(self, prometheus: Prometheus, traffic: Traffic) -> dict[str, str]:
        """
        Query until every check passes or L{DEADLINE}; return the problems
        left, by query.
        """
        deadline = time.monotonic() + DEADLINE
        while True:
            problems = self.problems(
                prometheus, dashboard_queries(), label_value_queries()
            )
            if not problems or time.monotonic() > deadline or traffic.errors:
                return problems
            time.sleep(SCRAPE_SECONDS)

    def problems(
        self,
        prometheus: Prometheus,
        queries: list[tuple[str, str]],
        variables: list[tuple[str, str, str]],
    ) -> dict[str, str]:
        """
        What is not there (yet): each of C{queries} that fails, each metric
        they name that Prometheus has never seen, each of C{variables}
        without values.
        """
        problems: dict[str, str] = {}
        names = set(prometheus.get("/api/v1/label/__name__/values"))
        for title, expression in queries:
            for metric in re.findall(r"\b(?:echoplus_\w+|up)\b", expression):
                if metric not in names:
                    problems[f"{title}: {metric}"] = (
                        f"panel {title!r} queries {metric}, which does not exist "
                        f"(known: {', '.join(sorted(n for n in names if 'echo' in n))})"
                    )
            try:
                result = prometheus.get("/api/v1/query", query=expression)
            except (urllib.error.HTTPError, AssertionError) as error:
                problems[expression] = f"panel {title!r}: {expression}: {error}"
                continue
            problem = _problem(result)
            if problem is not None:
                problems[expression] = f"panel {title!r}: {expression}: {problem}"
        for variable, metric, label in variables:
            series = prometheus.get("/api/v1/series", **{"match[]": metric})
            if not any(label in labels for labels in series):
                problems[variable] = f"variable ${variable}: no {metric} with {label}"
        return problems
