#!/usr/bin/env python3
"""A TCP proxy on loopback whose downstream direction (upstream -> client) is limited to a rate
shared by all its connections: the bandwidth one node gets from a container registry.

    ratelimit_proxy.py --upstream 127.0.0.1:5000 [--listen 127.0.0.1:0] [--rate 25MB]
                       [--port-file FILE]

`--rate` is bytes per second with an optional suffix: k/M/G (powers of 1000, "MB" too) or
Ki/Mi/Gi (powers of 1024); `0` or `off` means unlimited. Default: $WARMPOOL_REGISTRY_RATE or 25MB.
The port actually bound is written to `--port-file` (write then rename) once it accepts, so a
caller that asks for port 0 never races for a free port. Requests (client -> upstream) are not
limited: a registry pull is all download. Only loopback addresses are accepted, both ends.

Python because the machine has python3 and the control-plane script already needs it; a proxy
is ~100 lines of asyncio, with nothing to build or cache, and fast enough (a 64 KiB chunk per
wake-up: 25 MB/s is ~400 wake-ups a second).
"""

import argparse
import asyncio
import ipaddress
import os
import re
import signal
import sys
import time

CHUNK = 64 * 1024
# Pacing may run ahead of real time by this much: small bursts, as a real link has.
BURST_SECONDS = 0.05


def parse_rate(text):
    text = text.strip()
    if text.lower() in ("0", "off", "unlimited", "none"):
        return 0.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]i?)?[bB]?(?:/s)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 25MB, 10Mi, 1500000)")
    value = float(m.group(1))
    unit = (m.group(2) or "").lower()
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1024, "mi": 1024**2, "gi": 1024**3}[unit]
    return value * scale


def loopback(hostport):
    host, _, port = hostport.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{hostport}: only loopback addresses are allowed")
    return host, int(port)


class Pacer:
    """One virtual clock for every connection: each chunk is due len/rate after the previous."""

    def __init__(self, rate):
        self.rate = rate
        self.next_free = time.monotonic()

    async def take(self, n):
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.next_free = max(self.next_free, now) + n / self.rate
        ahead = self.next_free - now - BURST_SECONDS
        if ahead > 0:
            await asyncio.sleep(ahead)


async def pump(reader, writer, pacer):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if pacer is not None:
                await pacer.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, type=loopback)
    parser.add_argument("--listen", default="127.0.0.1:0", type=loopback)
    parser.add_argument(
        "--rate", type=parse_rate, default=os.environ.get("WARMPOOL_REGISTRY_RATE", "25MB")
    )
    parser.add_argument("--port-file")
    args = parser.parse_args()
    if isinstance(args.rate, str):
        args.rate = parse_rate(args.rate)
    pacer = Pacer(args.rate)
    up_host, up_port = args.upstream

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
        except OSError as e:
            print(f"ratelimit_proxy: upstream {up_host}:{up_port}: {e}", file=sys.stderr)
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, up_writer, None),
            pump(up_reader, client_writer, pacer),
        )

    host, port = args.listen
    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, args.port_file)
    rate = f"{args.rate / 1e6:.1f} MB/s" if args.rate > 0 else "unlimited"
    print(f"ratelimit_proxy: {host}:{bound} -> {up_host}:{up_port} at {rate}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
