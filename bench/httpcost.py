"""What one HTTP request costs the client in CPU: httpx over its own transport, httpx over starbuild's
pool and wire (what builds use), httpx's client layer alone, and a bare keep-alive HTTP/1.1 GET over
asyncio streams (the floor).

The emulator runs in a process of its own, so only the client's CPU is counted (process_time of
this process). Each figure is the median over rounds of REQUESTS task queries, 50 in flight.

    python bench/httpcost.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time

import httpx

IN_FLIGHT = 50
PATH = "/v1/tasks/task-unknown"


async def _httpcore(url: str, n: int) -> float:
    """httpx's own transport (httpcore), as starbuild used it before it had its own wire."""
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), base_url=url,
                                 limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        return await _measure(client, n)


async def _measure(client: httpx.AsyncClient, n: int) -> float:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with gate:
            resp = await client.get(PATH, headers={"Authorization": "Bearer bench"})
            await resp.aread()

    await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))  # connections opened
    start = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - start) / n


async def _httpx(url: str, n: int) -> float:
    from starbuild.api.pool import StackPool

    async with httpx.AsyncClient(transport=StackPool(), base_url=url) as client:
        return await _measure(client, n)


async def _client_layer(n: int) -> float:
    class Canned(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(404, headers={"content-type": "application/json"}, content=b"{}")

    async with httpx.AsyncClient(transport=Canned(), base_url="http://127.0.0.1:9") as client:
        start = time.process_time()
        for _ in range(n):
            resp = await client.get(PATH, headers={"Authorization": "Bearer bench"})
            await resp.aread()
        return (time.process_time() - start) / n


async def _bare(host: str, port: int, n: int) -> float:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    gate = asyncio.Semaphore(IN_FLIGHT)
    request = f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer bench\r\n\r\n".encode()

    async def one() -> None:
        async with gate:
            reader, writer = idle.pop() if idle else await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            idle.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
    start = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    spent = (time.process_time() - start) / n
    for _, writer in idle:
        writer.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "starbuild", "emulator", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        if not match:
            raise SystemExit(f"the emulator did not start: {line}")
        host, port = match.group(1), int(match.group(2))
        url = f"http://{host}:{port}"
        figures = {"httpx + its own transport (httpcore)": [], "httpx + starbuild's pool and wire": [],
                   "httpx client layer only": [], "bare asyncio GET": []}
        for _ in range(args.rounds):
            figures["httpx + its own transport (httpcore)"].append(asyncio.run(_httpcore(url, args.requests)))
            figures["httpx + starbuild's pool and wire"].append(asyncio.run(_httpx(url, args.requests)))
            figures["httpx client layer only"].append(asyncio.run(_client_layer(args.requests)))
            figures["bare asyncio GET"].append(asyncio.run(_bare(host, port, args.requests)))
        floor = statistics.median(figures["bare asyncio GET"])
        for label, values in figures.items():
            med = statistics.median(values)
            print(f"httpcost: {label}: {med * 1e6:.0f} us of client CPU per request, median of {args.rounds} "
                  f"({med / floor:.1f}x the bare GET)")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
