"""The private path for blocking code: `PrivateProcessingClient` (the asyncio one is aio.py).

    client = PrivateProcessingClient.from_state(state / "client")
    summary = client.summarize(chat)                    # or rewrite(text, style), chat(prompt)
    for text in client.chat_stream("hi"):               # pieces as the model produces them
        ...
    with client.incognito_chat() as conversation:       # multi-turn, held in memory only
        reply = conversation.send("hi")                 # (parties/device/incognito.py)

What a use does, and what the report keeps of it, is path.py's (written once, as steps); the
session itself is connection.py's (sans-IO). This shell only runs those steps with a blocking
driver on one httpx client, and hands a streamed answer out as an iterator. Background token
refills run in a daemon thread's timer (wallet.py's `in_background`).

Rules: one request at a time per client (a caller that shares one across threads serialises
its calls, as openai.py's transport does); a stream holds the session until it is read to its
end or closed. Every failure is a typed error that says what failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Unpack, cast

import httpx

from privproc.errors import PeerRejectedError
from privproc.net.client import new_client
from privproc.net.drivers import Driver
from privproc.parties.device.answers import (
    ChatStream,
    StreamedAnswer,
    chat_body,
    model_card_of,
    stream_refused,
    task_answer,
)
from privproc.parties.device.config import ClientConfig, NotConfiguredError
from privproc.parties.device.connection import AnswerHead, EnclaveLostError
from privproc.parties.device.incognito import ChatOptions, IncognitoChat
from privproc.parties.device.logged import MAX_LIVE_ISSUER_KEYS, NotLoggedError, TargetedKeyError
from privproc.parties.device.path import PathClient, PrivatePath
from privproc.parties.device.results import ChatReply, Rewrite, Summary
from privproc.parties.device.wallet import in_background

__all__ = [
    "MAX_LIVE_ISSUER_KEYS",
    "ChatStream",
    "ClientConfig",
    "EnclaveLostError",
    "NotConfiguredError",
    "NotLoggedError",
    "PrivateProcessingClient",
    "StreamedAnswer",
    "TargetedKeyError",
    "model_card_of",
    "task_answer",
]


class PrivateProcessingClient(PathClient):
    def __init__(
        self,
        config: ClientConfig,
        state_dir: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or new_client(300)
        self._owns_http = http is None
        self._driver = Driver(self._http)
        self.path = PrivatePath(
            config, state_dir, schedule=in_background(self._driver), on_step=on_step
        )

    def __enter__(self) -> PrivateProcessingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.tokens.close()
        self.path.give_back()  # a token the gateway did not spend: the wallet keeps it
        self.close_session()
        if self._owns_http:
            self._http.close()

    def close_session(self) -> None:
        """End the current session (the next request opens a new one)."""
        self._driver.run(self.path.close_session())

    def _token(self) -> str:
        """A token, as the next new session would spend it (for tests that spend it otherwise)."""
        return self._driver.run(self.path.payment.session_token())

    def fill_wallet(self) -> int:
        """Fill the token wallet ahead of use (to its target, if it is low); how many tokens
        were fetched. Run when a feature is turned on, long before its first request."""
        return self._driver.run(self.path.fill_wallet())

    def request(self, method: str, path: str, doc: object | None = None) -> tuple[int, Any]:
        """One API request to the enclave over the private path, (status, JSON answer), as no
        use: not checked against the controls, not reported, not tried again (for tools and
        tests that look at the path itself)."""
        return self._driver.run(self.path.request(method, path, doc))

    def call(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> tuple[int, Any]:
        """Any enclave API request as a use of `feature` (checked and reported like the tasks):
        (status, JSON answer)."""
        own = self.path
        return self._driver.run(own.use(feature, chat_id, lambda: own.request(method, path, doc)))

    def call_stream(
        self,
        method: str,
        path: str,
        doc: object | None,
        *,
        feature: str,
        chat_id: str | None = None,
    ) -> StreamedAnswer:
        """An enclave API request whose answer is handed out as it is produced (a streamed chat
        completion's server-sent events), as a use of `feature` (path.py's `call_stream`).
        Returns once the answer's status has arrived."""
        run = self._driver.iterate(self.path.call_stream(method, path, doc, feature, chat_id))
        head = cast(AnswerHead, next(run))

        def pieces() -> Iterator[bytes]:
            try:
                for piece in run:
                    yield cast(bytes, piece)
            finally:
                close = getattr(run, "close", None)
                if close is not None:
                    close()
                self._driver.run(self.path.flush())  # a session left mid-answer is ended

        return StreamedAnswer(head.status, head.content_type, pieces())

    def summarize(self, chat: list[dict[str, str]], *, chat_id: str | None = None) -> Summary:
        """A summary of `chat` (messages with sender, time and text)."""
        return self._driver.run(self.path.summarize(chat, chat_id))

    def rewrite(self, text: str, style: str, *, chat_id: str | None = None) -> Rewrite:
        """`text` rewritten in `style` (rephrase, professional, funny, supportive, proofread)."""
        return self._driver.run(self.path.rewrite(text, style, chat_id))

    def chat(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatReply:
        """The model's answer to `prompt` (or to a list of OpenAI-style messages). `temperature`
        (0 to 2, the enclave's default 0.2): 0 always picks the likeliest next token."""
        body = chat_body(prompt, max_tokens, temperature)
        return self._driver.run(self.path.chat(body, chat_id))

    def chat_stream(
        self,
        prompt: str | list[dict[str, str]],
        *,
        chat_id: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatStream:
        """The model's answer as it is produced, piece by piece. The iteration ends at the
        answer's authenticated end; a cut stream raises `StreamTruncatedError`. Its
        `finish_reason` says, once it has ended, whether max_tokens cut it ("length")."""
        doc = {**chat_body(prompt, max_tokens, temperature), "stream": True}
        answer = self.call_stream("POST", "/v1/chat/completions", doc, feature="chat",
                                  chat_id=chat_id)  # fmt: skip
        if answer.status != 200:
            raise _refused_stream(answer)
        return ChatStream(answer, self.path.step)

    def incognito_chat(self, **options: Unpack[ChatOptions]) -> IncognitoChat:
        """A multi-turn chat held in this object's memory only, sent whole each turn and
        forgotten by `new()`, `close()` or the end of its `with` block
        (parties/device/incognito.py):
        `send(text)` -> `ChatReply`, `stream(text)` -> the pieces. At most `max_turns` exchanges
        and `max_chars` characters a turn; beyond, the oldest exchanges are forgotten
        (`on_overflow="refuse"`: `ChatTooLongError`)."""
        return IncognitoChat(self, **options)


def _refused_stream(answer: StreamedAnswer) -> PeerRejectedError:
    return stream_refused(answer.status, b"".join(answer))
