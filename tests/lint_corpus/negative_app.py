"""Nothing here is shared state mutated by a request handler: no findings expected."""

import threading

from flask import Flask, current_app, g, request, session

from sharedstate import Store

app = Flask(__name__)
store = Store("memory://")
hits = store.counter("hits")
prefs = store.dict("prefs")
lock = threading.Lock()

VERSION = "1.0"
ALLOWED = ("a", "b")
FROZEN = frozenset({"x"})
LIMITS = {"max": 10}  # read, never mutated
items = []
cache = {}
total = 0


class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self):
        return f"hello {self.name}"

    @staticmethod
    def update(value):
        return value


greeter = Greeter("world")
items.append("module-level setup is fine")
cache["boot"] = True


@app.route("/")
def index():
    g.user = "bob"
    g.count = getattr(g, "count", 0) + 1
    session["visits"] = session.get("visits", 0) + 1
    session.update(theme="dark")
    request.environ["x"] = 1
    current_app.extensions["y"] = 2
    prefs["theme"] = "dark"
    store.dict("other")["k"] = 1
    hits.incr()
    with lock:
        pass
    greeter.greet()
    greeter.update(1)
    return str(LIMITS["max"] + len(ALLOWED) + len(FROZEN) + len(VERSION) + total)


@app.route("/shadow")
def shadow(items):
    items.append(1)
    cache = {}
    cache["k"] = 1
    for total in range(3):
        print(total)
    local_list = []
    local_list.append(1)
    return str([x for x in items])


@app.route("/params/<name>")
def params(name, *args, **kwargs):
    kwargs.update(a=1)
    return name


@app.route("/readonly")
def readonly():
    global total
    return str(total + len(items) + len(cache))


def setup():
    global total
    total = 1
    items.append(1)
