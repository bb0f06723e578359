"""The proxy's own instructions per request, counted by valgrind's callgrind.

    .venv/bin/python bench/instructions.py [--duration 8]

Throughput on a shared or virtual machine moves by several percent from one run to the next;
an instruction count does not (the same code gives the same figure within about 1 %), so it tells
whether a change made the hot path cheaper. It counts user-space work only: the system calls'
kernel time, the same four per request whatever the code, is not in it.

The proxy runs under callgrind with counting off; for each scenario the script warms it up, counts
while wrk drives it at concurrency 32, and divides by the requests served. Under valgrind the proxy
runs some fifty times slower, so the figures are for comparing versions, not timings.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import CHAT, CHAT_STREAM, GENERATE, KEY, REPO, ensure_wrk, free_port, load, start_proxy, stop, wait_for_port

SCENARIOS = [
    ("pass-through /generate", "/generate", GENERATE),
    ("translated /v1/chat/completions", "/v1/chat/completions", CHAT),
    ("streamed chat (64 tokens)", "/v1/chat/completions", CHAT_STREAM),
]


def callgrind_total(path: Path) -> int:
    return sum(int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith("totals:"))


def control(*arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8, help="seconds of counted load per scenario")
    args = parser.parse_args()
    wrk = ensure_wrk()
    if not (wrk and shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("needs wrk and valgrind (Debian: apt-get install wrk valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="mooltiproxy-instructions-"))
    tgi_port, port = free_port(), free_port()
    tgi = subprocess.Popen([sys.executable, str(REPO / "bench" / "fast_tgi.py"), str(tgi_port)])
    proxy = None
    try:
        wait_for_port(tgi_port, tgi, "the stand-in TGI")
        out = folder / "callgrind.out"
        valgrind = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
        proxy = start_proxy(f"http://127.0.0.1:{tgi_port}", port, 1, False, folder, valgrind)
        print(f"{'scenario':<36}{'requests':>10}{'instructions / request':>26}")
        for dump, (name, path, body) in enumerate(SCENARIOS, start=1):
            url = f"http://127.0.0.1:{port}{path}"
            load(wrk, url, body, KEY, 32, 3)  # warm-up, not counted
            control("--zero", str(proxy.pid))
            control("--instr=on", str(proxy.pid))
            requests = load(wrk, url, body, KEY, 32, args.duration)[3]
            control("--instr=off", str(proxy.pid))
            control("--dump", str(proxy.pid))
            total = callgrind_total(Path(f"{out}.{dump}"))
            print(f"{name:<36}{requests:>10}{total / requests:>26,.0f}")
    finally:
        if proxy is not None:
            stop(proxy)
        stop(tgi)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
