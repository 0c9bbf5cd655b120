"""The private path for asyncio code: `AsyncPrivateProcessingClient`, native (no thread).

    async with AsyncPrivateProcessingClient.from_state(state / "client") as client:
        summary = await client.summarize(chat)
        async for text in client.chat_stream("hi"):
            ...

The same steps as the blocking client (path.py, over connection.py's sans-IO session), run by
the asyncio driver (net/steps.py) on one `httpx.AsyncClient`: every wait is awaited on the
caller's loop, and a background token refill is a task on that loop, not a thread.

Rules: one use at a time holds the attested session (`session_lock`, an asyncio lock that a
caller may also take to wait for the session to be free); a stream holds it until it is read to
its end or closed. Closing the client cancels a pending refill and ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Unpack, cast

import httpx

from privproc.net.client import new_async_client
from privproc.net.drivers import AsyncDriver
from privproc.net.steps import Step
from privproc.parties.device.answers import (
    AsyncStreamedAnswer,
    ChatEvents,
    chat_body,
    stream_refused,
)
from privproc.parties.device.config import ClientConfig
from privproc.parties.device.connection import AnswerHead
from privproc.parties.device.incognito import AsyncIncognitoChat, ChatOptions
from privproc.parties.device.path import PathClient, PrivatePath
from privproc.parties.device.results import ChatReply, Rewrite, Summary
from privproc.parties.device.wallet import Schedule

__all__ = ["AsyncPrivateProcessingClient"]


def on_loop(driver: AsyncDriver, tasks: set[asyncio.Task[None]]) -> Schedule:
    """A schedule that runs each refill with `driver` as a task on the running loop after its
    delay (kept in `tasks` until it ends, so that closing can cancel it)."""

    def schedule(delay: float, refill: Callable[[], Step[None]]) -> Callable[[], None]:
        loop = asyncio.get_running_loop()  # a take runs on the client's loop

        def start() -> None:
            task = loop.create_task(driver.run(refill()), name="wallet-refill")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        handle = loop.call_later(delay, start)
        return handle.cancel

    return schedule


class AsyncPrivateProcessingClient(PathClient):
    """`PrivateProcessingClient` for asyncio code: use it on one event loop."""

    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http or new_async_client(300)
        self._owns_http = http is None
        self._driver = AsyncDriver(self._http)
        self._refills: set[asyncio.Task[None]] = set()
        self.path = PrivatePath(
            config, state_dir, schedule=on_loop(self._driver, self._refills), on_step=on_step
        )
        self.session_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncPrivateProcessingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.tokens.close()
        for task in list(self._refills):
            task.cancel()
        async with self.session_lock:
            self.path.give_back()
            await self._driver.run(self.path.close_session())
        if self._owns_http:
            await self._http.aclose()

    async def _run(self, step: Step[Any]) -> Any:
        async with self.session_lock:
            return await self._driver.run(step)

    async def close_session(self) -> None:
        """End the current session (the next request opens a new one)."""
        await self._run(self.path.close_session())

    async def fill_wallet(self) -> int:
        """`PrivateProcessingClient.fill_wallet`."""
        return cast(int, await self._run(self.path.fill_wallet()))

    async def call(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> tuple[int, Any]:
        """`PrivateProcessingClient.call`."""
        own = self.path
        call = own.use(feature, chat_id, lambda: own.request(method, path, doc))
        return cast(tuple[int, Any], await self._run(call))

    @contextlib.asynccontextmanager
    async def call_stream(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> AsyncIterator[AsyncStreamedAnswer]:
        """`PrivateProcessingClient.call_stream`, as a context: the session is held until the
        block ends (the rest of the answer, if unread, is dropped with its session).

            async with client.call_stream("POST", path, doc, feature="chat") as answer:
                async for piece in answer: ...
        """
        async with self.session_lock:
            step = self.path.call_stream(method, path, doc, feature, chat_id)
            run = cast(AsyncGenerator[object, None], self._driver.iterate(step))
            try:
                head = cast(AnswerHead, await anext(run))

                async def pieces() -> AsyncIterator[bytes]:
                    async for piece in run:
                        yield cast(bytes, piece)

                yield AsyncStreamedAnswer(head.status, head.content_type, pieces())
            finally:
                await run.aclose()
                await self._driver.run(self.path.flush())  # a session left mid-answer ends

    async def summarize(self, chat: list[dict[str, str]], *, chat_id: str | None = None) -> Summary:
        return cast(Summary, await self._run(self.path.summarize(chat, chat_id)))

    async def rewrite(self, text: str, style: str, *, chat_id: str | None = None) -> Rewrite:
        return cast(Rewrite, await self._run(self.path.rewrite(text, style, chat_id)))

    async def chat(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatReply:
        body = chat_body(prompt, max_tokens, temperature)
        return cast(ChatReply, await self._run(self.path.chat(body, chat_id)))

    async def chat_stream(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """The answer as it is produced (`PrivateProcessingClient.chat_stream`); the session is
        held until the stream ends or is closed."""
        doc = {**chat_body(prompt, max_tokens, temperature), "stream": True}
        async with self.call_stream(
            "POST", "/v1/chat/completions", doc, feature="chat", chat_id=chat_id
        ) as answer:
            if answer.status != 200:
                raise stream_refused(answer.status, b"".join([p async for p in answer]))
            events = ChatEvents(self.path.step)
            async for piece in answer:
                for text in events.feed(piece):
                    yield text
            events.finish()

    def incognito_chat(self, **options: Unpack[ChatOptions]) -> AsyncIncognitoChat:
        """`PrivateProcessingClient.incognito_chat`, for asyncio code (`await send(text)`,
        `async for piece in stream(text)`, `async with`)."""
        return AsyncIncognitoChat(self, **options)
