"""The proxy's own instructions per request, and per streamed token, counted by valgrind's
callgrind, beside the bare relay's doing the same upstream work.

    .venv/bin/python bench/instructions.py [--duration 8] [--only proxy|relay] [--repo PATH] [--no-access-log]

Throughput on a shared or virtual machine moves by several percent from one run to the next;
an instruction count does not (the same code gives the same figure within about 1 %), so it tells
whether a change made the hot path cheaper. It counts user-space work only: the system calls'
kernel time, the same four per request whatever the code, is not in it.

The proxy (then the relay) runs under callgrind with counting off; for each scenario the script
warms it up, counts while wrk drives it at concurrency 32, and divides by the requests served.
Streams of 16, 64 and 256 tokens separate what a stream costs once from what each token costs (the
slope). The stand-in writes each answer in one piece (its raw server), so that how many events one
read brings does not depend on timing: the slope is the cost of translating a token, without the
cost of a read and a write per token that a real stream adds (bench/run.py measures that one).
`--repo` counts the proxy of another checkout (an older commit, say) with this script. Under
valgrind the proxy runs some fifty times slower, so the figures are for comparing versions, not
timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (
    CHAT,
    GENERATE,
    KEY,
    REPO,
    ensure_wrk,
    free_port,
    load,
    stop,
    upstream_request,
    wait_for_port,
    write_config,
)

STREAMED = (16, 64, 256)
SCENARIOS = [
    ("pass-through /generate", "/generate", GENERATE),
    ("translated chat", "/v1/chat/completions", CHAT),
    *(
        (f"streamed chat ({tokens} tokens)", "/v1/chat/completions", {**CHAT, "max_tokens": tokens, "stream": True})
        for tokens in STREAMED
    ),
]


def callgrind_total(path: Path) -> int:
    return sum(int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith("totals:"))


def control(*arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


def count(
    wrk: str,
    command: list[str],
    port: int,
    folder: Path,
    scenarios: list[tuple[str, str, dict]],
    duration: float,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> dict[str, float]:
    """Instructions per request of each scenario, the process under callgrind."""
    out = folder / f"callgrind-{port}.out"
    valgrind = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
    process = subprocess.Popen(
        [*valgrind, *command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures = {}
    try:
        wait_for_port(port, process, command[1], 120)
        for dump, (name, path, body) in enumerate(scenarios, start=1):
            url = f"http://127.0.0.1:{port}{path}"
            load(wrk, url, body, KEY, 32, 3)  # warm-up, not counted
            control("--zero", str(process.pid))
            control("--instr=on", str(process.pid))
            requests = load(wrk, url, body, KEY, 32, duration)[3]
            control("--instr=off", str(process.pid))
            control("--dump", str(process.pid))
            figures[name] = callgrind_total(Path(f"{out}.{dump}")) / requests
    finally:
        stop(process)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8, help="seconds of counted load per scenario")
    parser.add_argument("--only", choices=["proxy", "relay"], help="count one of the two only")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose proxy is counted")
    parser.add_argument("--no-access-log", action="store_true", help="the proxy with system.log_access: false")
    args = parser.parse_args()
    wrk = ensure_wrk()
    if not (wrk and shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("needs wrk and valgrind (Debian: apt-get install wrk valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="mooltiproxy-instructions-"))
    tgi_port = free_port()
    tgi = subprocess.Popen([sys.executable, str(REPO / "bench" / "fast_tgi.py"), str(tgi_port), "raw"])
    tgi_url = f"http://127.0.0.1:{tgi_port}"
    results: dict[str, dict[str, float]] = {}
    try:
        wait_for_port(tgi_port, tgi, "the stand-in TGI")
        if args.only != "relay":
            port = free_port()
            quiet = {"log_access": False} if args.no_access_log else {}
            config = write_config(folder / "bench-config.yaml", tgi_url, port, **quiet)
            command = [sys.executable, "-m", "main", "--config", str(config)]
            environment = {"MOOLTIPROXY_KEY": KEY}
            results["proxy"] = count(wrk, command, port, folder, SCENARIOS, args.duration, environment, args.repo)
        if args.only != "proxy":
            # The relay does each scenario's upstream work: TGI's own API, or the translated body.
            relayed = []
            for name, path, body in SCENARIOS:
                relayed.append((name, path, body) if path == "/generate" else (name, *upstream_request(tgi_url, body)))
            port = free_port()
            command = [sys.executable, str(REPO / "bench" / "plain_relay.py"), str(port), tgi_url, KEY]
            results["relay"] = count(wrk, command, port, folder, relayed, args.duration)
    finally:
        stop(tgi)
        shutil.rmtree(folder, ignore_errors=True)
    report(results)


def report(results: dict[str, dict[str, float]]) -> None:
    sides = list(results)
    print(f"{'scenario':<32}" + "".join(f"{side + ' / request':>20}" for side in sides))
    for name, _, _ in SCENARIOS:
        print(f"{name:<32}" + "".join(f"{results[side][name]:>20,.0f}" for side in sides))
    low, high = STREAMED[0], STREAMED[-1]
    for side in sides:
        first, last = results[side][f"streamed chat ({low} tokens)"], results[side][f"streamed chat ({high} tokens)"]
        slope = (last - first) / (high - low)
        print(f"{side}: {slope:,.0f} instructions per streamed token; a stream's own cost {first - low * slope:,.0f}")


if __name__ == "__main__":
    main()
