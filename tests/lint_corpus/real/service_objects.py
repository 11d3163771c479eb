# Service objects in production-style Flask apps: a database wrapper opening its connection lazily, a
# settings loader caching its file by mtime, a client with a memo of tokens (per-process caches), next
# to a stats object and an in-memory repository that really keep request data in the process, and an
# admin endpoint reloading the configuration in one worker only. Modelled on service-layer apps in the
# code index. Batch 6: written before the linter was changed for it. Pattern only: written anew.
import json
import os
import sqlite3

from flask import Flask, jsonify, request

app = Flask(__name__)
CONFIG = {}


def load_config():
    with open("config.json") as fh:
        return json.load(fh)


class Database:
    def __init__(self, path):
        self.path = path
        self.conn = None

    def connection(self):
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
        return self.conn


class Settings:
    def __init__(self, path):
        self.path = path
        self._mtime = None
        self._data = {}

    def get(self, key):
        mtime = os.path.getmtime(self.path)
        if mtime != self._mtime:
            with open(self.path) as fh:
                self._data = json.load(fh)
            self._mtime = mtime
        return self._data.get(key)


class TokenClient:
    def __init__(self):
        self._tokens = {}

    def token_for(self, scope):
        if scope not in self._tokens:
            self._tokens[scope] = self._fetch(scope)
        return self._tokens[scope]

    def _fetch(self, scope):
        return f"token-{scope}"


class Stats:
    def __init__(self):
        self.requests = 0
        self.errors = []

    def hit(self):
        self.requests += 1

    def error(self, message):
        self.errors.append(message)


class NoteRepository:
    def __init__(self):
        self.notes = {}

    def add(self, note_id, text):
        self.notes[note_id] = text

    def find(self, note_id):
        return self.notes.get(note_id)


db = Database("app.db")
settings = Settings("settings.json")
tokens = TokenClient()
stats = Stats()
notes = NoteRepository()


@app.route("/rows")
def rows():
    cur = db.connection().cursor()  # quiet: a connection opened once per process
    return jsonify(cur.execute("select 1").fetchall())


@app.route("/feature")
def feature():
    return jsonify(settings.get("feature"))  # quiet: an mtime-checked cache of a file


@app.route("/call")
def call():
    return tokens.token_for("read")  # quiet: a per-process memo of tokens


@app.route("/notes/<note_id>", methods=["PUT"])
def put_note(note_id):
    stats.hit()  # expect: SS106
    notes.add(note_id, request.data.decode())  # expect: SS106
    return "", 204


@app.route("/notes/<note_id>")
def get_note(note_id):
    return notes.find(note_id) or ("", 404)  # quiet: a method that only reads


@app.errorhandler(500)
def server_error(error):
    stats.error(str(error))  # expect: SS106
    return "error", 500


@app.route("/admin/reload", methods=["POST"])
def reload_config():
    global CONFIG
    CONFIG = load_config()  # expect: SS101
    return "ok"
