"""`memory-agent run` with its embedded nats-server and the real MiniLM model, driven by the CLI and examples.

Everything runs as a subprocess, the way a user runs it, so the README's commands and the examples
cannot rot.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memory_agent", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def example(name: str, *args: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Path]]:
    data = tmp_path_factory.mktemp("memory-data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEMORY_AGENT_EMBEDDED_NATS_PORT": str(free_port()),
           "MEMORY_AGENT_HTTP__LISTEN": f"127.0.0.1:{free_port()}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "memory_agent", "run", "--data-dir", str(data)], env=env,
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    lines: list[str] = []
    url = None
    while time.monotonic() < deadline and url is None:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if m := re.search(r"Agents connect to: (nats://\S+)", line):
            url = m.group(1)
    assert url, "daemon did not come up:\n" + "".join(lines)
    # A start-up log a newcomer reads as normal: no progress bars, no "rebuilt 0 vectors".
    assert not any("it/s" in line or "Loading weights" in line or "rebuilt 0" in line for line in lines), lines
    env["MEMORY_AGENT_NATS_URL"] = url
    # Keep reading its log so the pipe never fills.
    import threading

    threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    yield proc, env, data
    if proc.poll() is None:  # SIGTERM, so that it stops its embedded nats-server too
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def reported(daemon) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The reporting examples, run once against the module's daemon (what the questions below ask about):
    each example's name -> its output. 6 reports: 2 anomalies, a rollback, 3 flaky tests."""
    _, env, _ = daemon
    return {name: example(name, env=env) for name in ("monitor_anomaly.py", "deploy_rollback.py", "flaky_tests.py")}


def test_examples_report_and_the_postmortem_gets_the_timeline(daemon, reported) -> None:  # type: ignore[no-untyped-def]
    _, env, _ = daemon
    assert reported["monitor_anomaly.py"].count('"status": "stored"') == 2
    assert '"status": "stored"' in reported["deploy_rollback.py"]
    assert reported["flaky_tests.py"].count('"status": "stored"') == 3
    out = example("postmortem.py", env=env)
    assert "Timeline of trace t-81: 3 events" in out
    timeline = out.split("\n\n")[0]
    assert timeline.index("reported anomaly") < timeline.index("reported rollback") < timeline.index("reported root_cause")
    assert "Best match:" in out and "@deploy reported rollback" in out
    assert "1 event of type rollback in the last 7 days (" in out and ", UTC):" in out  # the window in words
    assert "{'since'" not in out


def test_cli_ask_report_stats_check(daemon, reported) -> None:  # type: ignore[no-untyped-def]
    _, env, _ = daemon
    done = cli("report", '{"event": "deploy", "service": "search", "version": "v9"}', "--trace-id", "t-99", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "stored"
    done = cli("report", "[1, 2]", env=env)
    assert done.returncode == 2 and "JSON object" in done.stderr
    done = cli("ask", "Which tests were flaky today?", env=env)
    assert done.returncode == 0, done.stderr
    assert "test_login_redirect" in done.stdout and "@test-runner reported flaky_test" in done.stdout
    done = cli("ask", "What did we deploy to search?", "--json", env=env)
    answer = json.loads(done.stdout)
    assert answer["events"][0]["trace_id"] == "t-99"
    deadline = time.monotonic() + 60
    while True:  # a report is acknowledged once stored; its vector follows
        stats = json.loads(cli("stats", "--json", env=env).stdout)
        if stats["embedding"]["backlog"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stats["model"] == "all-MiniLM-L6-v2" and stats["index"]["type"] == "flat"
    assert stats["events"] == stats["index"]["size"] >= 7
    assert stats["health"]["status"] == "ok" and stats["health"]["ready"] is True
    text = cli("stats", env=env).stdout
    assert text.startswith("health:  ok") and "vectors, flat" in text
    done = cli("check", env=env)  # asks the daemon's /readyz
    assert done.returncode == 0 and done.stdout.startswith("ok: @memory ready (nats: connected"), done.stderr
    assert "0 waiting" in done.stdout, done.stdout


def test_cli_ask_limit_applies_to_the_plain_text_answer(daemon, reported) -> None:  # type: ignore[no-untyped-def]
    _, env, _ = daemon
    full = cli("ask", "Which tests were flaky today?", env=env)
    assert full.returncode == 0, full.stderr
    assert full.stdout.startswith("2 events of type flaky_test today (")
    assert full.stdout.count("- [#") == 2
    limited = cli("ask", "Which tests were flaky today?", "--limit", "1", env=env)
    assert limited.returncode == 0, limited.stderr
    assert limited.stdout.startswith("2 events of type flaky_test today (")  # the count stays exact
    assert limited.stdout.count("- [#") == 1 and "... and 1 more" in limited.stdout
    assert not limited.stdout.lstrip().startswith("{")  # text, not JSON
    bad = cli("ask", "Which tests were flaky today?", "--limit", "0", env=env)
    assert bad.returncode == 2 and "--limit" in bad.stderr


@pytest.mark.skipif(not LOCOMO.is_file(), reason="needs ../shared/data/locomo/locomo10.json")
def test_locomo_replay_prints_questions_gold_and_answers(daemon) -> None:  # type: ignore[no-untyped-def]
    _, env, _ = daemon
    out = example("locomo_replay.py", "--questions", "3", env=env)
    assert re.search(r"replayed 419 turns of conv-26", out)
    assert out.count("Q: ") == 3 and out.count("gold: ") == 3
    assert "@memory D" in out


def test_sigterm_shuts_down_cleanly_then_reindex_and_check(daemon) -> None:  # type: ignore[no-untyped-def]
    proc, env, data = daemon
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert cli("check", "--timeout", "3", env=env).returncode == 1
    done = cli("reindex", "--rebuild-only", "--data-dir", str(data), env=env)
    assert done.returncode == 0, done.stderr
    assert "rebuilt" in done.stdout
    done = cli("reindex", "--data-dir", str(data), env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"re-embedded \d+ events with all-MiniLM-L6-v2", done.stdout)
    assert "100%" in done.stderr  # the progress bar ran to the end
