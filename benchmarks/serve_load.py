"""Load on `coronet serve` over loopback: requests/s, latency percentiles, errors. Prints figures; asserts nothing.

    python benchmarks/serve_load.py                        # an untrained CoroNet (legacy_xception, 150 px)
    python benchmarks/serve_load.py --model runs/quick/4class/fold-1/model --requests 400 --clients 16 --cam-every 10

Starts ``coronet serve`` in its own process on 127.0.0.1 (a free port), waits for
``/v1/health``, then ``--clients`` threads, each with its own keep-alive connection, send
``--requests`` POST /v1/predict in total, cycling through real films from the shared data
(every ``--cam-every``-th request also asks for the Grad-CAM overlay). Latency is the
client's, from sending the request to having the JSON; a reply that is not 200 with the
prediction's JSON (a 503 from a full server, a transport error) counts as an error. Afterwards
it checks health again and stops the server. The server's log goes to a temporary file,
printed (its end) if the server fails.
"""

from __future__ import annotations

import argparse
import os
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
        "--max-concurrency",
        type=int,
        help="passed to coronet serve (default: its own, 4 x model threads + 8; it counts open "
        "connections, so keep it above --clients)",
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
        log = Path(tmp) / "server.log"  # a file, not a pipe: nothing reads a pipe during the run, and a full one blocks
        with open(log, "wb") as stderr:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from coronet.cli import app; app()",
                    "serve",
                    "--model",
                    str(model_dir),
                    "--port",
                    str(port),
                    "--runtime",
                    args.runtime,
                ]
                + (["--model-threads", str(args.model_threads)] if args.model_threads else [])
                + (["--max-concurrency", str(args.max_concurrency)] if args.max_concurrency else []),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            health = wait_healthy(url, server, log)
            print(
                f"server: {health['model']} ({health['runtime']}, model threads {args.model_threads or 'default'}), "
                f"{os.cpu_count()} CPUs; {args.requests} requests "
                f"from {args.clients} clients, {len(uploads)} real films"
                + (f", Grad-CAM on every {args.cam_every}th" if args.cam_every else "")
            )
            load(url, uploads, min(16, args.requests), args.clients, 0)  # warm-up
            wall, results = load(url, uploads, args.requests, args.clients, args.cam_every)
            latencies = [t for t, _ in results]
            errors = sum(not ok for _, ok in results)
            print(
                f"{args.requests / wall:.1f} requests/s; latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
                f"errors {errors}"
            )
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
