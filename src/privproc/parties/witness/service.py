"""The witness (C2SP tlog-witness) as an ASGI app.

Endpoints:
- `POST /add-checkpoint`: see `privproc.tlog.witness`; 200 with a cosignature line
  (`text/plain; charset=utf-8`), or 400/403/404/409/422 as the spec assigns, 409 carrying the
  witness's size as `text/x.tlog.size`, 413 for a body over 64 KiB.
- `GET /<sha256(origin) in hex>/checkpoint`: the latest checkpoint this witness cosigned for that
  log, with the log's signatures and the witness's (the tlog-witness monitoring API); 404 if none.

Rules: the body is read with a bound; SQLite and Ed25519 run in a worker thread; refusals are
logged by status only (never the origin or any byte of the request).
"""

from __future__ import annotations

import hashlib

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privproc import logs
from privproc.net.http import BodyError, read_body
from privproc.net.metrics import instrument
from privproc.tlog.witness import MAX_REQUEST, MEDIA_TYPE_SIZE, Witness, WitnessRefusal

PARTY = "witness"
TEXT = "text/plain; charset=utf-8"


def create_witness_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_REQUEST)
        except BodyError as exc:
            return exc.response
        try:
            line = await run_in_threadpool(witness.add_checkpoint, body)
        except WitnessRefusal as exc:
            logs.event(PARTY, "add-checkpoint", status=exc.status, outcome="refused")
            if exc.status == 409 and exc.size is not None:
                # Exactly this type, no charset: tlog-witness clients compare it verbatim.
                return Response(
                    f"{exc.size}\n", status_code=409, headers={"content-type": MEDIA_TYPE_SIZE}
                )
            return Response(str(exc) + "\n", status_code=exc.status, media_type=TEXT)
        logs.event(PARTY, "add-checkpoint", status=200, outcome="cosigned")
        return Response(line, media_type=TEXT, headers={"cache-control": "no-store"})

    async def monitoring(request: Request) -> Response:
        origin_hash = request.path_params["origin_hash"]
        for origin, _size in await run_in_threadpool(witness.logs):
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                note = await run_in_threadpool(witness.latest, origin)
                if note is not None:
                    return Response(note, media_type=TEXT, headers={"cache-control": "no-cache"})
        return Response(status_code=404)

    app = Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{origin_hash:str}/checkpoint", monitoring, methods=["GET"]),
        ]
    )
    return instrument(app, PARTY)
