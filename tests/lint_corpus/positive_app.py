"""Every kind of finding; each expected one is marked on its line with `expect:`."""

from collections import Counter, defaultdict, deque

import mylib
from flask import Blueprint, Flask
from flask.views import MethodView

app = Flask(__name__)
bp = Blueprint("bp", __name__)

counter = 0
settings = {"theme": "light"}
seen = set()
log = []
by_user = defaultdict(int)
tally = Counter()
recent = deque(maxlen=10)
client = mylib.Client()
last_user = None


class Stats:
    total = 0

    def __init__(self):
        self.hits = 0
        self.names = []

    def record(self, name):
        self._remember(name)
        return self.hits

    def _remember(self, name):
        self.names.append(name)

    def read(self):
        return self.hits

    def update(self):
        return dict(self.__dict__)


class Registry(Stats):
    def reset(self):
        del self.names[0]


stats = Stats()
registry = Registry()


@app.route("/count")
def count():
    global counter, last_user
    counter += 1  # expect: SS101
    last_user = "someone"  # expect: SS101
    return str(counter)


@app.get("/items")
def items():
    log.append("items")  # expect: SS105
    settings["theme"] = "dark"  # expect: SS103
    seen.add(1)  # expect: SS105
    by_user["bob"] += 1  # expect: SS102
    tally.update(["x"])  # expect: SS105
    recent.appendleft(3)  # expect: SS105
    del settings["theme"]  # expect: SS103
    client.timeout = 5  # expect: SS104
    client.retries += 1  # expect: SS102
    client.pool.clear()  # quiet: an unknown object's method (a client's pool), not a container
    Stats.total += 1  # expect: SS102
    stats.read()
    stats.update()
    registry.read()
    return ""


@bp.post("/record")
async def record():
    stats.record("x")  # expect: SS106
    registry.reset()  # expect: SS106
    registry.record("y")  # expect: SS106
    return helper()


def helper():
    deeper()
    return "ok"


def deeper():
    log.extend([1, 2])  # expect: SS105
    _ = [log.pop() for _ in range(1)]  # expect: SS105


@app.before_request
def before():
    def inner():
        seen.discard(2)  # expect: SS105

    inner()
    stats.hits = 0  # expect: SS104


@app.errorhandler(404)
def not_found(error):
    log.insert(0, error)  # expect: SS105
    return "", 404


def registered_view():
    settings.setdefault("a", 1)  # expect: SS105
    return ""


app.add_url_rule("/registered", view_func=registered_view)


class ItemView(MethodView):
    def get(self):
        return self.render()

    def render(self):
        log.reverse()  # expect: SS105
        return ""


def not_a_handler():
    log.append("never reported: no handler calls this")
