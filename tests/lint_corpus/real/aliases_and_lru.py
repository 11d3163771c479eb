# Module state reached through a local alias, and the dict a functools.lru_cache function returns
# being mutated. Modelled on room-based games and chat servers that bind `rooms = ROOMS` before
# editing (e.g. the chess/room server behind code index file id 42686394675) and on cached settings
# loaders. Pattern only: written anew.
import copy
from functools import cache, lru_cache

from flask import Flask, jsonify, request

app = Flask(__name__)

ROOMS = {}
STATE = {"players": [], "scores": {}}
BANNED = set()


@lru_cache(maxsize=1)
def get_settings():
    return {"theme": "light", "limits": {"rooms": 10}}


@cache
def get_registry():
    return {}


@app.route("/rooms/<room>", methods=["POST"])
def create_room(room):
    rooms = ROOMS
    rooms[room] = {"players": []}  # expect: SS103
    players = STATE["players"]
    players.append(request.json["name"])  # expect: SS105
    scores = STATE["scores"]
    scores[request.json["name"]] = 0  # expect: SS103
    return jsonify(rooms)


@app.route("/ban/<name>", methods=["POST"])
def ban(name):
    banned = BANNED
    banned.add(name)  # expect: SS105
    return "ok"


@app.route("/copy/<room>", methods=["POST"])
def copy_room(room):
    rooms = dict(ROOMS)
    rooms[room] = {}  # quiet: a copy
    snapshot = copy.deepcopy(STATE)
    snapshot["players"].append("x")  # quiet: a deep copy
    names = list(BANNED)
    names.append("y")  # quiet: a copy
    return jsonify(rooms, snapshot, names)


@app.route("/settings/theme/<name>", methods=["POST"])
def set_theme(name):
    get_settings()["theme"] = name  # expect: SS103
    limits = get_settings()["limits"]
    limits["rooms"] = int(request.args.get("rooms", 10))  # expect: SS103
    return "ok"


@app.route("/register/<name>", methods=["POST"])
def register(name):
    get_registry().setdefault(name, request.json)  # expect: SS105
    return "ok"


@app.route("/settings")
def settings():
    theme = get_settings()["theme"]  # quiet: read
    mine = dict(get_settings())
    mine["theme"] = "dark"  # quiet: a copy
    return jsonify(theme=theme, mine=mine)
