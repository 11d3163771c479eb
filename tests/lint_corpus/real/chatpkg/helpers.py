# Helpers of the chat package (see __init__.py): some change the state module, some only read.
from .state import ONLINE, ROOMS


def add_member(room, sid):
    ROOMS.setdefault(room, []).append(sid)


def mark_online(sid):
    ONLINE.add(sid)


def describe(room):
    return f"{room}: {len(ROOMS.get(room, []))} members, {len(ONLINE)} online"
