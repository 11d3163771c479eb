# Modelled on: a Flask-SocketIO channel chat (code index file id 35231183745) and a room/sid map
# chat (id 30566979420). Pattern only: written anew for this corpus, no code copied.
import os

from flask import Flask, jsonify, render_template, request
from flask_socketio import SocketIO, emit, join_room, leave_room, send

app = Flask(__name__)
app.config["SECRET_KEY"] = os.getenv("SECRET_KEY")
socketio = SocketIO(app)

nicknames = []
channels = ["general"]
history = {"general": []}
members = {}
sid_info = {}


@app.route("/")
def index():
    return render_template("index.html")


@app.route("/users/<nick>", methods=["POST"])
def claim_nick(nick):
    if nick in nicknames:  # quiet: read
        return "taken"
    nicknames.append(nick)  # expect: SS105
    return "ok"


@app.route("/channels/<name>", methods=["POST"])
def open_channel(name):
    if name not in channels:
        channels.append(name)  # expect: SS105
        history[name] = []  # expect: SS103
    return jsonify(history[name])  # quiet: read


@app.route("/channels")
def list_channels():
    return jsonify(sorted(channels))  # quiet: read


@socketio.on("join")
def on_join(data):
    room = data.get("room", "general")
    nick = data.get("nick") or "anon"
    previous = sid_info.get(request.sid)  # quiet: read
    if previous and request.sid in members.get(previous["room"], set()):
        members[previous["room"]].discard(request.sid)  # expect: SS105
    join_room(room)  # quiet: framework call
    members.setdefault(room, set()).add(request.sid)  # expect: SS105
    sid_info[request.sid] = {"nick": nick, "room": room}  # expect: SS103
    emit("status", {"msg": f"{nick} joined"}, room=room)  # quiet: framework call


@socketio.on("leave")
def on_leave(data):
    leave_room(data["room"])  # quiet: framework call
    sid_info.pop(request.sid, None)  # expect: SS105
    send(f"{data['nick']} left", room=data["room"])


@socketio.on("message")
def on_message(data):
    entry = (data["time"], data["nick"], data["text"])
    history[data["channel"]].append(entry)  # expect: SS105
    send(data, json=True, room=data["channel"])
