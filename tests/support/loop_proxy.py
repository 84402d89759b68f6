"""What the test proxies share: a TCP proxy on 127.0.0.1 with its own asyncio loop in a background thread,
at most ``max_connections`` connections and a ``lifetime`` after which it stops by itself.

A subclass says what happens on one connection (``_admit``, ``_serve``); this class runs the server, opens the
upstream connection and cancels what is still running when the proxy stops. Used by faults.proxy.FaultProxy and
shaped_proxy.ShapedProxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TypeVar

_P = TypeVar("_P", bound="LoopProxy")  # typing.Self is 3.11+, the package supports 3.10


class LoopProxy:
    """A bounded, self-stopping proxy to ``upstream`` (host, port); use as a context manager."""

    name = "proxy"  # in the thread's name and the start error

    def __init__(self, upstream: tuple[str, int], *, max_connections: int, lifetime: float):
        self.upstream = upstream
        self.max_connections, self.lifetime = max_connections, lifetime
        self.port = 0
        self.expired = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name=self.name.replace(" ", "-"), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self: _P) -> _P:
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"{self.name} did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have ended by itself meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    # -- what a subclass provides

    def _admit(self, cwriter: asyncio.StreamWriter) -> int | None:
        """The new connection's number, or None after refusing it (the subclass closes ``cwriter``)."""
        raise NotImplementedError

    def _upstream_down(self, cwriter: asyncio.StreamWriter) -> None:
        """The upstream refused a connection: close the client's."""
        cwriter.transport.abort()

    async def _serve(
        self,
        conn: int,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        """Carry one connection until it ends; close both sides before returning."""
        raise NotImplementedError

    # -- loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to __enter__
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except asyncio.TimeoutError:
            self.expired = True
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        conn = self._admit(cwriter)
        if conn is None:
            return
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        except OSError:
            self._upstream_down(cwriter)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(conn, creader, cwriter, ureader, uwriter)
        except asyncio.CancelledError:
            pass  # the proxy is stopping; end quietly (asyncio's server callback dislikes cancelled handlers)
        finally:
            self._tasks.discard(task)
