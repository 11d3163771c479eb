# Modelled on: Flask-SocketIO class-based namespaces (Strady/socket-io-demo socket_io.py and the
# ChatNamespace examples in the code index). Batch 2: written before the linter was changed for it.
# Pattern only: written anew.
from flask import request
from flask_socketio import Namespace, SocketIO, emit, join_room, leave_room

socketio = SocketIO()
room_users = {}
typing = set()


class ChatNamespace(Namespace):
    def on_connect(self):
        emit("status", {"ok": True})  # quiet: framework call

    def on_join(self, data):
        room = data["room"]
        join_room(room)  # quiet: framework call
        room_users.setdefault(room, []).append(request.sid)  # expect: SS105

    def on_leave(self, data):
        leave_room(data["room"])
        room_users.get(data["room"], []).remove(request.sid)  # expect: SS105

    def on_typing(self, data):
        typing.add(data["user"])  # expect: SS105

    def on_message(self, data):
        emit("message", data, to=data["room"])  # quiet: framework call

    def on_who(self, data):
        return sorted(room_users.get(data["room"], []))  # quiet: read


socketio.on_namespace(ChatNamespace("/chat"))
