"""The proxy's cost, measured against a bare aiohttp relay doing the same upstream work, in the
same run, interleaved.

    .venv/bin/python bench/run.py [--duration 10] [--rounds 3] [--concurrency 1,32] [--workers N]
                                  [--rss-requests 100000] [--soak SECONDS] [--compare-accelerators]
                                  [--proxy-url URL --proxy-key KEY]

Starts a fast stand-in TGI (bench/fast_tgi.py, no artificial delay), the proxy, and the ceiling:
bench/plain_relay.py, a bare relay. Each proxy path is paired with the relay carrying the very
body the proxy sends upstream (a translated chat request's prompt and parameters, so the same
tokens come back); the two are driven in turns, `--rounds` times, with wrk (installed with apt-get
when missing and possible; else a Python load generator). It prints, per path and concurrency:
requests per second of each, the ratio, the latency the proxy adds at p50 and p99, then the time
to first streamed token and the proxy's resident memory. `--proxy-url` measures another proxy on
the same work instead (it must route /generate, /generate_stream and /v1/chat/completions to the
stand-in, whose URL the script prints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-proxy-key-0123456789abcdef"
LIMITED_KEY = "bench-limited-key-0123456789abcdef"
GENERATE = {"inputs": "What is Deep Learning? Explain it in a few words.", "parameters": {"max_new_tokens": 16}}
CHAT = {
    "model": "bench",
    "messages": [{"role": "user", "content": "What is Deep Learning?"}],
    "max_tokens": 16,
    "temperature": 0,
}
CHAT_STREAM = {**CHAT, "max_tokens": 64, "stream": True}
# What each path is expected to reach, as a ratio of the relay's throughput (docs/performance.md).
GOALS = {"pass-through /generate": 0.95, "translated chat": 0.85, "streamed chat (64 tokens)": 0.90}


class ScenarioFailed(Exception):
    """The target answered errors: a proxy that does not support this scenario."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(current, peak) resident memory of the largest of these processes, in MB."""
    current = peak = 0.0
    for pid in pids:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except OSError:
            continue
        current = max(current, int(fields["VmRSS"].split()[0]) / 1024)
        peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)
    return current, peak


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        for child in children.read_text().split():
            found += process_tree(int(child))
    return found


def ensure_wrk() -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing wrk with apt-get ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True)
    return shutil.which("wrk")


_DURATION = re.compile(r"([\d.]+)(us|ms|s)")


def _ms(text: str) -> float:
    value, unit = _DURATION.match(text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, url: str, body: dict, key: str | None, concurrency: int, duration: float) -> tuple:
    script = "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
    if key:
        script += f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
    script += f"wrk.body = {json.dumps(json.dumps(body))}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        output = subprocess.run(
            [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", file.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(file.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise ScenarioFailed(f"{non_2xx.group(1)} of {requests} requests failed")
    return rps, p50, p99, requests


async def _python_load(url: str, body: dict, key: str | None, concurrency: int, duration: float) -> tuple:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status >= 400:
                        raise ScenarioFailed(f"HTTP {response.status}")
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
        len(latencies),
    )


def load(wrk: str | None, url: str, body: dict, key: str | None, concurrency: int, duration: float) -> tuple:
    if wrk:
        return run_wrk(wrk, url, body, key, concurrency, duration)
    return asyncio.run(_python_load(url, body, key, concurrency, duration))


async def _first_chunk_ms(url: str, body: dict, key: str | None, samples: int) -> float:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    timings = []
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                if response.status != 200:
                    raise ScenarioFailed(f"HTTP {response.status}")
                await response.content.readany()
                timings.append((time.perf_counter() - started) * 1000)
                await response.read()
    return statistics.median(timings)


def time_to_first_token(tgi: str, relay: str, proxy: str, key: str | None, samples: int = 300) -> tuple[float, float]:
    path, body = upstream_request(tgi, CHAT_STREAM)
    direct = asyncio.run(_first_chunk_ms(f"{relay}{path}", body, KEY, samples))
    through = asyncio.run(_first_chunk_ms(f"{proxy}/v1/chat/completions", CHAT_STREAM, key, samples))
    return direct, through


def bench_config(tgi_url: str, port: int, workers: int = 1, state: str | None = None) -> dict:
    config: dict = {
        "system": {"host": "127.0.0.1", "port": port},
        "cerbere": {"max_tries": 1000000},
        "targets": {
            "default": "tgi",
            "tgi": {
                "url": tgi_url,
                "mapping": {
                    "/generate": None,
                    "/generate_stream": None,
                    "/chat/completions": {
                        "path": "/generate",
                        "in": "chatReqOpenAItoTGI",
                        "out": "chatAnsTGItoOpenAI",
                        "prompter": "llama2_chat",
                    },
                },
            },
        },
    }
    if workers > 1:
        config["system"]["workers"] = workers
    if state:
        config["system"]["state"] = state
        limits = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}
        config["clients"] = {"limited": {"envkey": "BENCH_LIMITED_KEY", "limits": limits}}
    return config


def write_config(path: Path, tgi_url: str, port: int, **system: object) -> Path:
    """The benchmark's config, with these `system` settings, written to `path`."""
    config = bench_config(tgi_url, port)
    config["system"].update(system)
    path.write_text(yaml.safe_dump(config))
    return path


def upstream_request(tgi_url: str, body: dict) -> tuple[str, dict]:
    """The path and body the proxy sends the stand-in for this chat request, made by the proxy's
    own mappers: what the bare relay carries, so that both ask the same tokens."""
    from mooltiproxy.config.loader import load_config
    from mooltiproxy.core.sealing import Sealer
    from mooltiproxy.serving.context import RequestContext

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(bench_config(tgi_url, 0)))
        config = load_config(path, {"MOOLTIPROXY_KEY": KEY})
    target = config.targets["tgi"]
    endpoint = target.endpoints["/chat/completions"]
    assert endpoint.request_mapper is not None and endpoint.stream_path is not None
    context = RequestContext("-", "bench", Sealer(KEY, b"reasoning"))
    context.raw_body, context.target, context.endpoint = json.dumps(body).encode(), target, endpoint
    mapped = endpoint.request_mapper(context.body, endpoint, context)
    return (endpoint.stream_path if body.get("stream") else endpoint.upstream_path), dict(mapped)


def start_proxy(
    tgi_url: str,
    port: int,
    workers: int,
    pure: bool,
    folder: Path,
    under: tuple[str, ...] = (),
    state: str | None = None,
) -> subprocess.Popen:
    """The proxy on `port`, routing to the stand-in; `under`: a command it runs under (valgrind);
    `state`: a state store, with a client key whose (unreachable) limits are checked in it."""
    path = folder / "bench-config.yaml"
    path.write_text(yaml.safe_dump(bench_config(tgi_url, port, workers, state)))
    env = {**os.environ, "MOOLTIPROXY_KEY": KEY, "BENCH_LIMITED_KEY": LIMITED_KEY}
    if pure:
        env["MOOLTIPROXY_PURE_PYTHON"] = "1"
    process = subprocess.Popen(
        [*under, sys.executable, "-m", "main", "--config", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "proxy.log").open("w"),
    )
    wait_for_port(port, process, "the proxy", 120 if under else 20)
    time.sleep(0.3 * workers)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Pair:
    """A path through the proxy and the relay doing the same upstream work."""

    name: str
    proxy: tuple[str, dict, str | None]  # url, body, key
    relay: tuple[str, dict, str | None]
    runs: dict[str, list[tuple]] | None = None  # side -> the (rps, p50, p99, requests, seconds) of each turn

    def rps(self, side: str) -> float:
        turns = (self.runs or {}).get(side, [])
        seconds = sum(turn[4] for turn in turns)
        return sum(turn[3] for turn in turns) / seconds if seconds else float("nan")

    def latency(self, side: str, index: int) -> float:
        turns = (self.runs or {}).get(side, [])
        return statistics.median(turn[index] for turn in turns) if turns else float("nan")


def pairs(args, tgi_url: str, proxy_url: str, relay_url: str, key: str) -> list[Pair]:
    chat_path, chat_body = upstream_request(tgi_url, CHAT)
    stream_path, stream_body = upstream_request(tgi_url, CHAT_STREAM)
    found = [
        Pair(
            "pass-through /generate", (f"{proxy_url}/generate", GENERATE, key), (f"{relay_url}/generate", GENERATE, KEY)
        ),
        Pair(
            "translated chat",
            (f"{proxy_url}/v1/chat/completions", CHAT, key),
            (f"{relay_url}{chat_path}", chat_body, KEY),
        ),
        Pair(
            "streamed chat (64 tokens)",
            (f"{proxy_url}/v1/chat/completions", CHAT_STREAM, key),
            (f"{relay_url}{stream_path}", stream_body, KEY),
        ),
    ]
    if args.state:
        store = "redis" if args.state.startswith("redis") else "sqlite"
        found.insert(
            1,
            Pair(
                f"pass-through /generate, limited key ({store})",
                (f"{proxy_url}/generate", GENERATE, LIMITED_KEY),
                (f"{relay_url}/generate", GENERATE, KEY),
            ),
        )
    return found


def measure(args, wrk, found: list[Pair], concurrency: int) -> list[Pair]:
    """Each pair's relay and proxy driven in turns, `rounds` times, the order swapped each round,
    so that the machine's drift weighs on both alike."""
    turn = args.duration / args.rounds
    measured = []
    for pair in found:
        runs: dict[str, list[tuple]] = {"relay": [], "proxy": []}
        try:
            for side in ("relay", "proxy"):
                load(wrk, *getattr(pair, side), concurrency, 1)  # warm-up: connections, caches
            for round_ in range(args.rounds):
                for side in ("relay", "proxy") if round_ % 2 == 0 else ("proxy", "relay"):
                    rps, p50, p99, requests = load(wrk, *getattr(pair, side), concurrency, turn)
                    runs[side].append((rps, p50, p99, requests, requests / rps if rps else 0.0))
        except ScenarioFailed as failure:
            print(f"{pair.name} at concurrency {concurrency}: not measured, {failure}")
            continue
        measured.append(Pair(pair.name, pair.proxy, pair.relay, runs))
    return measured


def report(results: dict[int, list[Pair]], label: str = "") -> None:
    print(
        f"{'path' + label:<52}{'conc':>5}{'relay/s':>10}{'proxy/s':>10}{'x relay':>9}{'goal':>6}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}"
    )
    for concurrency, measured in results.items():
        for pair in measured:
            relay, proxy = pair.rps("relay"), pair.rps("proxy")
            goal = GOALS.get(pair.name)
            print(
                f"{pair.name:<52}{concurrency:>5}{relay:>10.0f}{proxy:>10.0f}{proxy / relay:>9.2f}"
                f"{f'{goal:.2f}' if goal else '':>6}{pair.latency('proxy', 1) - pair.latency('relay', 1):>9.3f}"
                f"{pair.latency('proxy', 2) - pair.latency('relay', 2):>9.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per path and side, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="turns of relay and proxy per path")
    parser.add_argument("--concurrency", type=lambda text: [int(c) for c in text.split(",")], default=[1, 32])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rss-requests", type=int, default=0, help="then drive this many requests and report RSS")
    parser.add_argument("--soak", type=float, default=0, help="then a soak of this many seconds, RSS sampled")
    parser.add_argument(
        "--compare-accelerators",
        action="store_true",
        help="also measure the proxy without uvloop and orjson (MOOLTIPROXY_PURE_PYTHON=1)",
    )
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator, not wrk")
    parser.add_argument(
        "--upstream",
        choices=["aiohttp", "raw"],
        default="aiohttp",
        help="the stand-in TGI's server: aiohttp (default) or a bare asyncio protocol",
    )
    parser.add_argument("--tgi-port", type=int, default=0, help="the stand-in's port (default: a free one)")
    parser.add_argument("--proxy-url", help="measure this proxy instead of starting mooltiproxy")
    parser.add_argument("--proxy-key", default=KEY)
    parser.add_argument(
        "--state", help="a state store (redis://host:port/0, a SQLite path) and scenarios with a limited key"
    )
    args = parser.parse_args()

    wrk = None if args.python_load else ensure_wrk()
    print(
        f"machine: {os.cpu_count()} cores, {platform_line()}; load generator: {'wrk' if wrk else 'python'}; "
        f"{args.duration:.0f} s per scenario"
    )
    folder = Path(tempfile.mkdtemp(prefix="mooltiproxy-bench-"))
    tgi_port = args.tgi_port or free_port()
    tgi = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "fast_tgi.py"), str(tgi_port), args.upstream],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tgi_url = f"http://127.0.0.1:{tgi_port}"
    wait_for_port(tgi_port, tgi, "the stand-in TGI")
    print(f"stand-in TGI ({args.upstream}): {tgi_url}")
    proxies = []
    try:
        if args.proxy_url:
            proxy_url, pids = args.proxy_url.rstrip("/"), []
        else:
            port = free_port()
            proxies.append(start_proxy(tgi_url, port, args.workers, False, folder, state=args.state))
            proxy_url, pids = f"http://127.0.0.1:{port}", process_tree(proxies[0].pid)
        relay_port = free_port()
        relay = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "plain_relay.py"), str(relay_port), tgi_url, KEY],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proxies.append(relay)
        wait_for_port(relay_port, relay, "the bare aiohttp relay")
        relay_url = f"http://127.0.0.1:{relay_port}"
        found = pairs(args, tgi_url, proxy_url, relay_url, args.proxy_key)
        results = {concurrency: measure(args, wrk, found, concurrency) for concurrency in args.concurrency}
        try:
            direct_ttft, proxy_ttft = time_to_first_token(tgi_url, relay_url, proxy_url, args.proxy_key)
        except (ScenarioFailed, aiohttp.ClientError):
            direct_ttft = proxy_ttft = float("nan")
        if pids:
            memory_after_scenarios = memory_mb(pids)
        if args.rss_requests and pids:
            done = 0
            while done < args.rss_requests:
                done += load(wrk, f"{proxy_url}/v1/chat/completions", CHAT, args.proxy_key, 32, 5)[3]
            rss_line = (
                f"after {done} more requests: proxy RSS {memory_mb(pids)[0]:.1f} MB (peak {memory_mb(pids)[1]:.1f})"
            )
        if args.soak and pids:
            samples = []
            deadline = time.monotonic() + args.soak
            while time.monotonic() < deadline:
                load(wrk, f"{proxy_url}/v1/chat/completions", CHAT, args.proxy_key, 32, 10)
                samples.append(memory_mb(pids)[0])
        if args.compare_accelerators and not args.proxy_url:
            stop(proxies.pop())
            port = free_port()
            proxies.append(start_proxy(tgi_url, port, args.workers, True, folder))
            pure_found = pairs(args, tgi_url, f"http://127.0.0.1:{port}", relay_url, args.proxy_key)
            pure = {concurrency: measure(args, wrk, pure_found, concurrency) for concurrency in args.concurrency}
        report(results)
        if args.compare_accelerators and not args.proxy_url:
            report(pure, " [pure Python]")
        print(
            f"time to first streamed token (median of 300): bare relay {direct_ttft:.3f} ms, through the proxy "
            f"{proxy_ttft:.3f} ms (+{proxy_ttft - direct_ttft:.3f} ms)"
        )
        if pids:
            print(
                f"proxy RSS after the scenarios, now / peak: {memory_after_scenarios[0]:.1f} / "
                f"{memory_after_scenarios[1]:.1f} MB"
            )
        if args.rss_requests and pids:
            print(rss_line)
        if args.soak and pids:
            print("soak RSS every 10 s (MB): " + " ".join(f"{sample:.1f}" for sample in samples))
            growth = samples[-1] - samples[0]
            print(f"soak: first {samples[0]:.1f} MB, last {samples[-1]:.1f} MB, growth {growth:+.1f} MB")
    finally:
        for process in proxies:
            stop(process)
        stop(tgi)


def platform_line() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, Python {sys.version.split()[0]}"


if __name__ == "__main__":
    main()
