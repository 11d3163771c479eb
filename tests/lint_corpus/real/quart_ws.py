# Modelled on: Quart websocket chats (LinkedInLearning/async-python-foundations-applied-concepts-2422322
# CH_04_06.py; c2h2learnstocode/quart_websocket_example simple_multi_user_chat.py), where the
# connection set is changed in the handler and in a wrapping decorator. Pattern only: written anew.
import asyncio
from functools import wraps

from quart import Quart, render_template, websocket

app = Quart(__name__)

connections = set()
queues = set()


def track_queue(func):
    @wraps(func)
    async def wrapper(*args, **kwargs):
        queue = asyncio.Queue()
        queues.add(queue)  # expect: SS105
        try:
            return await func(queue, *args, **kwargs)
        finally:
            queues.discard(queue)  # expect: SS105

    return wrapper


async def broadcast(message):
    for queue in queues:
        await queue.put(message)  # quiet: a per-connection queue


@app.websocket("/ws")
async def ws():
    me = websocket._get_current_object()
    connections.add(me)  # expect: SS105
    try:
        while True:
            message = await websocket.receive()
            await asyncio.gather(*[c.send(message) for c in connections])
    finally:
        connections.remove(me)  # expect: SS105


@app.websocket("/ws-queued")
@track_queue
async def ws_queued(queue):
    data = await queue.get()  # quiet: a local queue
    await websocket.send(data)
    await broadcast(data)


@app.route("/")
async def index():
    return await render_template("chat.html", online=len(connections))
