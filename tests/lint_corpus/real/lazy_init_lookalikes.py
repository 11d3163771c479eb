# Per-process caches and lazy initialisation that stay correct under several workers: each process
# fills its own copy from the same source. Modelled on the shapes seen in real apps (a static-file list
# built once, an mtime-checked template memo, a hash-checked manifest memo, a background thread
# started once, a lazily created client). Pattern only: written anew. Nothing here is a default
# finding; SS201 (off by default) may report these.
import hashlib
import os
import threading
from functools import cache

from flask import Flask, abort, jsonify, render_template_string, send_from_directory

app = Flask(__name__)

_STATIC = None
_TEMPLATES = {}
_MANIFESTS = {}
_RENDERED = {}
_worker = None
_client = None


def list_static_files():
    return sorted(os.listdir("static"))


def make_client():
    return object()


def poll_forever():
    while True:
        pass


@cache
def load_settings():
    with open("settings.json") as fh:
        return fh.read()


@app.route("/static-list")
def static_list():
    global _STATIC
    if not _STATIC:
        _STATIC = list_static_files()  # quiet: lazy init
    return jsonify(_STATIC)


@app.route("/page/<name>")
def page(name):
    path = os.path.join("templates", name)
    mtime = os.path.getmtime(path)
    entry = _TEMPLATES.get(path)
    if entry is None or entry[0] != mtime:
        with open(path) as fh:
            _TEMPLATES[path] = (mtime, fh.read())  # quiet: mtime-checked memo
    return render_template_string(_TEMPLATES[path][1])


@app.route("/manifest/<name>")
def manifest(name):
    with open(name, "rb") as fh:
        raw = fh.read()
    digest = hashlib.sha256(raw).hexdigest()
    if _MANIFESTS.get(name, (None,))[0] != digest:
        _MANIFESTS[name] = (digest, raw.decode())  # quiet: hash-checked memo
    return _MANIFESTS[name][1]


@app.route("/render/<key>")
def render(key):
    if key not in _RENDERED:
        _RENDERED[key] = render_template_string(key)  # quiet: memo of a pure function of the key
    return _RENDERED[key]


@app.before_request
def start_poller():
    global _worker
    if _worker is None:
        _worker = threading.Thread(target=poll_forever, daemon=True)  # quiet: thread started once
        _worker.start()


@app.route("/client")
def client_info():
    global _client
    if _client is None:
        _client = make_client()  # quiet: lazily created client
    return repr(_client)


@app.route("/settings")
def settings():
    return load_settings()  # quiet: read of an lru_cache result


@app.route("/files/<path:name>")
def files(name):
    if name not in list_static_files():
        abort(404)
    return send_from_directory("static", name)
