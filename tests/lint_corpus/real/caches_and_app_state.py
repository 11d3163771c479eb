# Per-process caches written as cachetools objects and get-then-set memo dicts (look-alikes), and
# application state changed in requests (FastAPI `app.state`, Starlette `request.app.state`), plus a
# view class whose class-level dict is changed through `self`. Modelled on production FastAPI and
# Flask services in the code index. Batch 4: written before the linter was changed for it. Pattern only.
from cachetools import TTLCache
from fastapi import FastAPI, Request
from flask.views import MethodView

app = FastAPI()
app.state.visits = 0  # quiet: import time
_profile_cache = TTLCache(maxsize=1024, ttl=300)
_geo_cache = {}


def fetch_profile(user_id):
    return {"id": user_id}


def lookup_geo(ip):
    return {"ip": ip}


@app.get("/profile/{user_id}")
async def profile(user_id: int):
    cached = _profile_cache.get(user_id)  # quiet: read
    if cached is None:
        cached = fetch_profile(user_id)
        _profile_cache[user_id] = cached  # quiet: a TTL cache, per process by design
    return cached


@app.get("/geo/{ip}")
async def geo(ip: str):
    result = _geo_cache.get(ip)
    if result is None:
        result = lookup_geo(ip)
        _geo_cache[ip] = result  # quiet: get-then-set memo of a pure lookup
    return result


@app.post("/visit")
async def visit(request: Request):
    app.state.visits += 1  # expect: SS107
    request.app.state.last_ip = request.client.host  # expect: SS107
    return {"visits": app.state.visits}  # quiet: read


class ReportView(MethodView):
    rendered = {}

    def get(self, name):
        self.rendered[name] = self.rendered.get(name, 0) + 1  # expect: SS103
        return str(self.rendered[name])
