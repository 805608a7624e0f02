#!/usr/bin/env python3
"""Instructions, allocations and system calls per request of `warmpool webhook`, under callgrind.

Wall-clock and CPU-time figures move with whatever else runs on the machine; instruction counts
do not. This starts the given `warmpool` binary under `valgrind --tool=callgrind`, drives it over
TLS on 127.0.0.1 with keep-alive HTTP/1.1 connections (one request in flight each, as
`benches/webhook/` does) and reports, per target and number of connections, what the *server*
executed per request: instructions (callgrind's Ir), calls of malloc/calloc/realloc, and system
calls.

    python3 benches/instructions.py --server target/release/warmpool
    python3 benches/instructions.py --server PATH --requests 4000 --connections 8,32 \
        --targets healthz,small,large --keep /tmp/cg   # keep the callgrind files
    python3 benches/instructions.py --server PATH --targets healthz,transport,small
        # transport: a body of the small review's size refused at its first byte (400)

Each measured window is bounded by two `GET /metrics` on the admin port: callgrind dumps its
counters on entry of the Prometheus text encoder (`--dump-before`), which nothing else calls.
A window with no request between two such calls is measured too and subtracted, so what is
left is the N requests alone (their TLS records, HTTP, routing, the review, its log line and
metrics), after warm-up requests on the same connections. Use a binary with symbols for
`callgrind_annotate` (the release profile strips them; see docs/performance.md for the profile
used).
"""

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
# The function on whose entry callgrind dumps: the registry's Prometheus text encoding, reached only from
# the admin port's GET /metrics.
DUMP_AT = "prometheus_client::registry::Registry::encode"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port, context):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        return cls(reader, writer)

    async def request(self, method, path, body=b""):
        head = f"{method} {path} HTTP/1.1\r\nhost: localhost\r\n"
        if body:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = None
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("answer without content-length")
        return status, await self.reader.readexactly(length)

    def close(self):
        self.writer.close()


async def admin_get(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def check(target, status, body):
    if target == "transport":
        if status != 400:
            raise RuntimeError(f"{target}: status {status}, not 400: {body[:200]!r}")
        return
    if status != 200:
        raise RuntimeError(f"{target}: status {status}: {body[:200]!r}")
    if target != "healthz" and b'"patchType":"JSONPatch"' not in body:
        raise RuntimeError(f"{target}: no JSONPatch in {body[:200]!r}")


async def drive(args, port, admin, context, payloads):
    """Returns [(label, connections, target, requests)] in the order of the windows."""
    deadline = time.monotonic() + 120
    while True:
        try:
            c = await Connection.open(port, context)
            status, _ = await c.request("GET", "/readyz")
            c.close()
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server was not ready within 120 s")
        await asyncio.sleep(0.2)

    windows = []
    # The baseline: two boundaries with nothing between (and the first boundary of all).
    await admin_get(admin, "/metrics")
    await admin_get(admin, "/metrics")
    windows.append(("baseline", 0, "-", 0))
    for connections in args.connections:
        for target in args.targets:
            method, path, body = payloads[target]
            per_connection = max(1, args.requests // connections)
            warmed, idle = [0], [0]
            go, done, all_idle = asyncio.Event(), asyncio.Event(), asyncio.Event()

            async def run(conn, n):
                for _ in range(n):
                    check(target, *await conn.request(method, path, body))

            async def client():
                # Under valgrind the handshakes of many connections take seconds: each
                # connection keeps sending (warm-up) until all are open, so that none sits
                # idle past the server's 2 s header-read deadline.
                conn = await Connection.open(port, context)
                await run(conn, args.warmup)
                warmed[0] += 1
                if warmed[0] == connections:
                    done.set()
                while not done.is_set():
                    await run(conn, 1)
                idle[0] += 1
                if idle[0] == connections:
                    all_idle.set()
                await go.wait()
                await run(conn, per_connection)
                return conn

            tasks = [asyncio.create_task(client()) for _ in range(connections)]
            await all_idle.wait()
            await admin_get(admin, "/metrics")
            go.set()
            conns = await asyncio.gather(*tasks)
            await admin_get(admin, "/metrics")
            windows.append(("phase", connections, target, per_connection * connections))
            for c in conns:
                c.close()
            # The next phase's first boundary must not see this phase's closing connections.
            await asyncio.sleep(0.5)
            await admin_get(admin, "/metrics")
    return windows


def parse(path):
    """Totals of one callgrind dump: {event: count}, and calls per callee name."""
    events, totals, names, calls = [], {}, {}, {}
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                totals = dict(zip(events, map(int, line.split()[1:])))
            elif line.startswith(("fn=", "cfn=", "cfi=", "cfl=", "fi=", "fe=", "fl=", "ob=", "cob=")):
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?", rest)
                if key in ("fn", "cfn") and m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    if key == "cfn":
                        callee = names.get(m.group(1))
            elif line.startswith("calls=") and callee is not None:
                n = int(line[6:].split()[0])
                calls[callee] = calls.get(callee, 0) + n
                callee = None
    return totals, calls


ALLOC = ("malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per phase")
    p.add_argument("--warmup", type=int, default=20, help="requests per connection before measuring")
    p.add_argument("--connections", default="8,32")
    p.add_argument("--targets", default="healthz,small,large")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="the server's --log-format (the chart's default is json)")
    p.add_argument("--keep", help="directory to keep the callgrind files in")
    args = p.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.targets = args.targets.split(",")
    read = lambda name: open(os.path.join(FIXTURES, name), "rb").read()
    payloads = {
        "healthz": ("GET", "/healthz", b""),
        "small": ("POST", "/mutate", read("pod-create.json")),
        "large": ("POST", "/mutate", read("pod-create-large.json")),
        # The transport of a small review without the review: a body of its size that is not
        # JSON from its first byte (400): TLS, HTTP, reading the body, an answer and its log line.
        "transport": ("POST", "/mutate", b"x" * len(read("pod-create.json"))),
    }

    work = tempfile.mkdtemp(prefix="warmpool-cg-")
    subprocess.run(
        [args.server, "certs", "--out", work, "--dns", "localhost", "--ip", "127.0.0.1", "--days", "1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    port, admin = free_port(), free_port()
    out = os.path.join(work, "callgrind.out")
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    server = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            f"--dump-before={DUMP_AT}", "--collect-systime=nsec",
            f"--log-file={os.path.join(work, 'valgrind.log')}",
            args.server, "webhook",
            "--tls-cert", os.path.join(work, "tls.crt"), "--tls-key", os.path.join(work, "tls.key"),
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{admin}",
            "--namespace", "warmpool", "--shutdown-grace", "0s", "--log-format", args.log_format,
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    context = ssl.create_default_context(cafile=os.path.join(work, "ca.crt"))
    context.set_alpn_protocols(["http/1.1"])
    try:
        windows = asyncio.run(drive(args, port, admin, context, payloads))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()

    dumps = sorted(
        (f for f in os.listdir(work) if re.fullmatch(r"callgrind\.out\.\d+", f)),
        key=lambda f: int(f.rsplit(".", 1)[1]),
    )
    # Dump 1 ends the start-up, dump 2 the baseline window; then three per phase: connections
    # opened and warmed up, the window, the connections closed.
    parsed = [parse(os.path.join(work, f)) for f in dumps]
    expected = 2 + 3 * (len(windows) - 1)
    if len(parsed) < expected:
        sys.exit(f"expected {expected} callgrind dumps, found {len(parsed)} in {work}")
    base_totals, base_calls = parsed[1]
    print(f"server: {args.server} (--log-format {args.log_format})")
    print(f"{'connections':>11} {'target':<8} {'requests':>8} {'instructions/req':>16} "
          f"{'allocations/req':>15} {'syscalls/req':>12}")
    ceiling = {}
    for i, (label, connections, target, n) in enumerate(windows[1:]):
        totals, calls = parsed[3 + 3 * i]
        ir = (totals.get("Ir", 0) - base_totals.get("Ir", 0)) / n
        allocs = sum(calls.get(a, 0) - base_calls.get(a, 0) for a in ALLOC) / n
        sys_calls = (totals.get("sysCount", 0) - base_totals.get("sysCount", 0)) / n
        if target == "healthz":
            ceiling[connections] = ir
        ratio = f"  ({ir / ceiling[connections]:.2f}x healthz)" if connections in ceiling and target != "healthz" else ""
        print(f"{connections:>11} {target:<8} {n:>8} {ir:>16.0f} {allocs:>15.1f} {sys_calls:>12.2f}{ratio}")
    print(f"(baseline window subtracted: {base_totals.get('Ir', 0)} instructions)")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        for f in os.listdir(work):
            if f.startswith("callgrind.out") or f == "valgrind.log":
                shutil.copy(os.path.join(work, f), args.keep)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
