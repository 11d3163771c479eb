# Hit counters, vote tallies and registration lists kept in module globals of small Flask apps (the
# `COUNTER = {}` hit-counter service and "global counter" tutorials in the code index, and a
# classroom session app, code index file id 48265192905). Pattern only: written anew.
from collections import Counter, deque

from flask import Flask, g, jsonify, redirect, request, session, url_for

app = Flask(__name__)

COUNTERS = {}
visits = 0
tally = Counter()
recent = deque(maxlen=50)
sessions = {}
LIMITS = {"max_students": 30}
DEBUG_NAMES = ("a", "b")


@app.route("/counters/<name>", methods=["POST"])
def create_counter(name):
    if name in COUNTERS:  # quiet: read
        return "", 409
    COUNTERS[name] = 0  # expect: SS103
    return jsonify({name: 0}), 201


@app.route("/counters/<name>", methods=["PUT"])
def update_counter(name):
    COUNTERS[name] += 1  # expect: SS102
    return jsonify({name: COUNTERS[name]})


@app.route("/")
def home():
    global visits
    visits += 1  # expect: SS101
    tally.update([request.remote_addr])  # expect: SS105
    recent.appendleft(request.path)  # expect: SS105
    return f"{visits} visits"


@app.route("/join", methods=["POST"])
def join():
    code = request.form["code"]
    name = request.form["name"]
    if code not in sessions:
        sessions[code] = {"teacher": name, "students": []}  # expect: SS103
    else:
        sessions[code]["students"].append(name)  # expect: SS105
    return redirect(url_for("home"))


@app.route("/whoami")
def whoami():
    g.user = request.args.get("u")  # quiet: per-request g
    session["seen"] = session.get("seen", 0) + 1  # quiet: per-user session
    names = list(DEBUG_NAMES)
    names.append("c")  # quiet: local list
    return jsonify(user=g.user, limit=LIMITS["max_students"], names=names)  # quiet: read


for _name in ("a", "b"):
    COUNTERS[_name] = 0  # quiet: import time
