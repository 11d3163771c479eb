# Modelled on: the Litestar after-response counter example (litestar-org/litestar
# docs/examples/lifecycle_hooks/after_response.py, MIT) and Starlette route tables
# (sonlamho/exp-starlette example1.py). Pattern only: written anew for this corpus.
import itertools
from collections import defaultdict

from litestar import Litestar, Request, get, post
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

PATH_HITS: dict[str, int] = defaultdict(int)
VOTES = {}
visitors = []
sockets = set()


async def count_response(request: Request) -> None:
    PATH_HITS[request.url.path] += 1  # expect: SS102


@get("/hits")
async def hits() -> dict[str, int]:
    return dict(PATH_HITS)  # quiet: read


@post("/vote/{choice:str}")
async def vote(choice: str) -> dict:
    VOTES[choice] = VOTES.get(choice, 0) + 1  # expect: SS103
    return VOTES


litestar_app = Litestar(route_handlers=[hits, vote], after_response=count_response)


async def homepage(request):
    visitors.append(request.client.host)  # expect: SS105
    return JSONResponse({"visitors": len(visitors)})


async def counter_page(request):
    return JSONResponse({"value": next(request.app.state.count)})  # quiet: app state read


async def ws_endpoint(websocket):
    await websocket.accept()
    sockets.add(websocket)  # expect: SS105
    try:
        async for message in websocket.iter_text():
            await websocket.send_text(message)
    finally:
        sockets.discard(websocket)  # expect: SS105


starlette_app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/count", endpoint=counter_page),
        WebSocketRoute("/ws", ws_endpoint),
    ]
)
starlette_app.state.count = itertools.count()  # quiet: import time
