"""Load on `coronet serve` over loopback: requests/s, latency percentiles, errors. Prints figures; asserts nothing.

    python benchmarks/serve_load.py                        # an untrained CoroNet (legacy_xception, 150 px)
    python benchmarks/serve_load.py --model runs/quick/4class/fold-1/model --requests 400 --clients 16 --cam-every 10

    python benchmarks/serve_load.py --stalled 0          # the load alone

Starts ``coronet serve`` in its own process on 127.0.0.1 (a free port), waits for
``/v1/health``, then ``--clients`` threads, each with its own keep-alive connection, send
``--requests`` POST /v1/predict in total, cycling through real films from the shared data
(every ``--cam-every``-th request also asks for the Grad-CAM overlay). Latency is the
client's, from sending the request to having the JSON; a reply that is not 200 with the
prediction's JSON (a 503 from a full server, a transport error) counts as an error.

The load runs twice: alone, then beside ``--stalled`` slow uploads (default 8), each a
connection that sent a prediction request's headers and the start of a 10 MB body and then
one byte every 5 s, as a hostile or very slow client would (so the upload timeout never
ends them). They hold upload slots (``--max-uploads``), never prediction slots, so the
figure should barely move; the line says how many were still open at the end, and what
``/v1/health`` counted during the run. Afterwards it checks health again and stops the
server. The server's log goes to a temporary file, printed (its end) if the server fails.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from coronet.deploy.export import export_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import benchmark_model_dir, films  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(
                f"server exited with status {server.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            return httpx.get(url + "/v1/health", timeout=5).json()
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("server did not become healthy")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def load(url: str, uploads: list[tuple[str, bytes]], requests: int, clients: int, cam_every: int):
    local = threading.local()

    def call(i: int):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=300)
        params = {"cam": "true"} if cam_every and i % cam_every == 0 else None
        start = time.perf_counter()
        try:
            response = local.client.post("/v1/predict", files={"file": uploads[i % len(uploads)]}, params=params)
            ok = response.status_code == 200 and "predicted_class" in response.json()
        except (httpx.HTTPError, ValueError):  # ValueError: a reply that is not JSON (uvicorn's plain 503)
            ok = False
        return time.perf_counter() - start, ok

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(call, range(requests)))
    return time.perf_counter() - start, results


class StalledUploads:
    """``count`` uploads stalled mid-body: headers and the start of a 10 MB body sent, then a byte every ``every``
    seconds from a thread of their own (under the upload timeout, so the server keeps waiting for them)."""

    def __init__(self, port: int, count: int, every: float = 5.0):
        head = (
            "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
        ).encode()
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n\r\n\x89PNG'
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
        for connection in self.sockets:
            connection.sendall(head + part)
        self.every, self.stop = every, threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(self.every):
            for connection in self.sockets:
                try:
                    connection.sendall(b"\0")
                except OSError:
                    pass  # answered and closed: counted by still_open()

    def still_open(self) -> int:
        """How many the server has neither answered nor closed."""
        return sum(not select.select([c], [], [], 0)[0] for c in self.sockets)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.sockets:
            connection.close()


def measure(url: str, port: int, uploads, args, stalled: int) -> None:
    """One load run beside ``stalled`` stalled uploads, and its line of figures."""
    slow = StalledUploads(port, stalled) if stalled else None
    try:
        if slow:
            time.sleep(1)  # their headers read: the uploads are in progress before the load starts
        counted = httpx.get(url + "/v1/health", timeout=30).json()
        wall, results = load(url, uploads, args.requests, args.clients, args.cam_every)
        open_at_end = slow.still_open() if slow else 0
    finally:
        if slow:
            slow.close()
    latencies = [t for t, _ in results]
    errors = sum(not ok for _, ok in results)
    print(
        f"{stalled} stalled uploads: {args.requests / wall:.1f} requests/s; latency p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, max "
        f"{max(latencies) * 1000:.0f} ms; errors {errors}"
        + (
            f" (health counted {counted['uploads_in_progress']} uploads in progress at the start; "
            f"{open_at_end} of {stalled} still open at the end)"
            if stalled
            else ""
        )
    )


def start_server(model_dir: Path, port: int, args, log: Path) -> subprocess.Popen:
    options = ["--model", str(model_dir), "--port", str(port), "--runtime", args.runtime]
    for name in ("model_threads", "max_concurrency", "max_uploads"):
        if getattr(args, name):
            options += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    with open(log, "wb") as stderr:  # a file, not a pipe: nothing reads a pipe during the run, and a full one blocks
        return subprocess.Popen(
            [sys.executable, "-c", "from coronet.cli import app; app()", "serve", *options],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: an untrained 150 px CoroNet)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CORONET_DATA", "../shared/data")))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cam-every", type=int, default=0, help="ask for Grad-CAM on every N-th request (0: never)")
    parser.add_argument("--runtime", default="torch", choices=("auto", "torch", "torch-bf16", "onnx", "onnx-int8"))
    parser.add_argument("--model-threads", type=int, help="passed to coronet serve (default: its own)")
    parser.add_argument(
        "--max-concurrency", type=int, help="passed to coronet serve (default: its own, 4 x model threads + 8)"
    )
    parser.add_argument("--max-uploads", type=int, help="passed to coronet serve (default: its own, 64)")
    parser.add_argument(
        "--stalled", type=int, default=8, help="also measure beside this many stalled uploads (0: the load alone)"
    )
    args = parser.parse_args()

    paths = films(args.data, 32)
    if not paths:
        raise SystemExit(f"no films under {args.data} (set --data or CORONET_DATA)")
    uploads = [(p.name, p.read_bytes()) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = benchmark_model_dir(Path(tmp) / "model", args.model)
        if args.runtime == "onnx":
            export_onnx(model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        server = start_server(model_dir, port, args, log)
        try:
            health = wait_healthy(url, server, log)
            print(
                f"server: {health['model']} ({health['runtime']}, model threads {args.model_threads or 'default'}, "
                f"max concurrency {health['max_concurrency']}, max uploads {health['max_uploads']}), "
                f"{os.cpu_count()} CPUs; {args.requests} requests from {args.clients} clients, "
                f"{len(uploads)} real films" + (f", Grad-CAM on every {args.cam_every}th" if args.cam_every else "")
            )
            load(url, uploads, min(16, args.requests), args.clients, 0)  # warm-up
            for stalled in sorted({0, args.stalled}):
                measure(url, port, uploads, args, stalled)
            after = httpx.get(url + "/v1/health", timeout=30)
            print(f"health after: {after.status_code} {after.json().get('status')}")
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
