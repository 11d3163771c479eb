# Views registered through wrappers: login and rate-limit decorators applied by call, the
# `app.route(...)(view)` form, Flask-SocketIO's on_event, and a decorator stacked above the route.
# Modelled on Flask apps that register views in a routes table (code index) and on a socketio chat
# with a custom wrapper (code index file id 14446147785). Pattern only: written anew.
from functools import wraps

from flask import Flask, request
from flask_limiter import Limiter
from flask_login import login_required
from flask_socketio import SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app)
limiter = Limiter(app)

downloads = []
typing_now = set()
last_seen = {}
failures = {}


def rate_limited(view):
    @wraps(view)
    def inner(*args, **kwargs):
        who = request.remote_addr
        failures[who] = failures.get(who, 0)  # expect: SS103
        return view(*args, **kwargs)

    return inner


def download(name):
    downloads.append(name)  # expect: SS105
    return name


def profile():
    last_seen[request.remote_addr] = 1  # expect: SS103
    return "me"


def typing(data):
    typing_now.add(data["user"])  # expect: SS105
    emit("typing", data, broadcast=True)


def unregistered(name):
    downloads.append(name)  # quiet: never registered as a view


app.add_url_rule("/download/<name>", view_func=login_required(download))
app.route("/profile")(rate_limited(profile))
socketio.on_event("typing", typing)


@app.route("/ping")
@limiter.limit("5/minute")
@login_required
def ping():
    last_seen.pop(request.remote_addr, None)  # expect: SS105
    return "pong"
