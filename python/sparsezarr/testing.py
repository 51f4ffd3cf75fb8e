"""Tools for testing and benchmarking against object stores on loopback.

- :func:`moto_s3` starts moto's S3 server on ``127.0.0.1`` (a real HTTP server speaking the S3
  protocol, with conditional writes, ranges and multipart uploads) and creates a bucket.
- :class:`LatencyProxy` is a TCP proxy that delays every packet by a fixed one-way time (so a
  round trip costs ``2 * delay``; ``tc netem`` is not available on every kernel) and counts the
  HTTP requests passing through by method (``GET`` with a ``Range`` header counts as
  ``GET-range``), the bytes each way and the most requests in flight at once.

Both need only the test dependencies (``moto[server]``, ``boto3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LatencyProxy", "S3Server", "moto_s3"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    """An S3 server on loopback: its endpoint URL and a bucket created on it."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"

    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs / ``FsspecStore.from_url``."""
        return {"endpoint_url": self.endpoint, "key": CREDENTIALS["AWS_ACCESS_KEY_ID"], "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}

    def obstore(self, prefix: str = "") -> Any:
        """An ``obstore.store.S3Store`` on this server's bucket."""
        from obstore.store import S3Store

        return S3Store(
            self.bucket,
            prefix=prefix or None,
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            client_options={"allow_http": True},
        )

    def via(self, endpoint: str) -> S3Server:
        """The same bucket reached through another endpoint (a proxy)."""
        return S3Server(endpoint, self.bucket, self.region)


@contextlib.contextmanager
def moto_s3(bucket: str = "test-bucket") -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port, create ``bucket``, and stop it on exit.
    Sets dummy AWS credentials in the environment (moto accepts any)."""
    import boto3
    from moto.server import ThreadedMotoServer

    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield S3Server(endpoint, bucket)
    finally:
        server.stop()


@dataclass
class Traffic:
    """What passed through a :class:`LatencyProxy`."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0
    bytes_down: int = 0
    peak_in_flight: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class LatencyProxy:
    """A TCP proxy to ``upstream`` (``host:port``) on a free loopback port, adding ``delay``
    seconds to every packet in each direction. Use as a context manager; :attr:`endpoint` is its
    URL, :attr:`traffic` what passed through (reset with :meth:`reset`)."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        host, _, port = upstream.replace("http://", "").partition(":")
        self._upstream = (host, int(port))
        self.delay = delay
        self.traffic = Traffic()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="latency-proxy")
        self.endpoint = ""

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> Traffic:
        """Return the traffic so far and start counting afresh."""
        with self._lock:
            t, self.traffic = self.traffic, Traffic()
        return t

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        waiting = [0]  # requests of this connection sent and not yet answered

        def request(method: str) -> None:
            with self._lock:
                self.traffic.requests[method] += 1
                self._in_flight += 1
                waiting[0] += 1
                self.traffic.peak_in_flight = max(self.traffic.peak_in_flight, self._in_flight)

        def answered() -> None:
            with self._lock:
                if waiting[0]:
                    waiting[0] -= 1
                    self._in_flight -= 1

        await asyncio.gather(
            self._pump(reader, up_writer, up=True, on_request=request),
            self._pump(up_reader, writer, up=False, on_response=answered),
            return_exceptions=True,
        )
        answered_all = waiting[0]
        with self._lock:
            self._in_flight -= answered_all

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool, on_request: Any = None, on_response: Any = None) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        parser = _RequestParser(on_request) if up else None

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await src.read(1 << 16)
                if not data:
                    break
                with self._lock:
                    if up:
                        self.traffic.bytes_up += len(data)
                    else:
                        self.traffic.bytes_down += len(data)
                if parser is not None:
                    parser.feed(data)
                elif on_response is not None:
                    on_response()
                queue.put_nowait((time.monotonic() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(asyncio.CancelledError):
                await sender


class _RequestParser:
    """Finds HTTP/1.1 request heads in a client's byte stream (skipping bodies by their
    ``Content-Length``) and reports each request's method."""

    def __init__(self, on_request: Any) -> None:
        self._buf = b""
        self._skip = 0
        self._on_request = on_request

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                self._buf = self._buf[n:]
                self._skip -= n
                if self._skip:
                    return
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1").split("\r\n")
            self._buf = self._buf[end + 4 :]
            method = head[0].split(" ", 1)[0]
            headers = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in head[1:] if ":" in h}
            if method == "GET" and "range" in headers:
                method = "GET-range"
            self._on_request(method)
            self._skip = int(headers.get("content-length", "0") or 0)
