# The routes of the wsapp package (see __init__.py).
import heapq
import itertools
import random

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect

from .manager import manager

app = FastAPI()
router = APIRouter()
DECK = list(range(52))
PENDING = []
ticket_ids = itertools.count(1)
DEFAULTS = {"page_size": 20}
FEATURES = {"beta": False}


class Flags:
    dark_mode = False


@app.on_event("startup")
async def startup():
    app.state.db = object()  # quiet: once per process, at startup
    PENDING.clear()  # quiet: once per process, at startup


@app.middleware("http")
async def add_user(request: Request, call_next):
    request.state.user = request.headers.get("X-User")  # quiet: per-request state
    return await call_next(request)


@router.websocket("/ws/{client_id}")
async def chat(websocket: WebSocket, client_id: int):
    await manager.connect(websocket)  # expect: SS106
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"{client_id}: {data}")  # quiet: a method that only reads
    except WebSocketDisconnect:
        manager.disconnect(websocket)  # expect: SS106


@router.post("/deal")
async def deal():
    random.shuffle(DECK)  # expect: SS105
    return DECK[:5]  # quiet: read


@router.post("/tickets")
async def ticket(priority: int):
    number = next(ticket_ids)  # expect: SS105
    heapq.heappush(PENDING, (priority, number))  # expect: SS105
    return {"ticket": number}


@router.get("/items")
async def items(request: Request):
    options = DEFAULTS.get("listing", DEFAULTS)
    options.update(request.query_params)  # expect: SS105
    return options


@router.post("/flags/{name}")
async def flag(name: str, value: bool):
    setattr(Flags, name, value)  # expect: SS104
    FEATURES[name] = value  # expect: SS103
    return {"ok": True}


@router.get("/db")
async def query(request: Request):
    return request.app.state.db.execute("select 1")  # quiet: a method of a client object


def paginate(rows, size):
    rows = list(rows)
    rows.append(None)  # quiet: a local copy
    return rows[:size]


@router.get("/pending")
async def pending():
    return paginate(PENDING, 10)  # quiet: the helper copies what it is given


app.include_router(router)
