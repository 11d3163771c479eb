# Modelled on: Flask MethodView APIs with a shared base view (the Flask docs' API pattern as used in
# many repositories, e.g. cisagov-style `ConfigView(MethodView)`), plus class-level statistics kept on
# a class and changed by a classmethod and a staticmethod. Pattern only: written anew.
from flask import Blueprint, jsonify, request
from flask.views import MethodView, View

from .auth import login_required

bp = Blueprint("api", __name__)

USERS = []
AUDIT = []


class RequestStats:
    hits = 0
    by_path = {}

    @classmethod
    def record(cls, path):
        cls.hits += 1
        cls.by_path[path] = cls.by_path.get(path, 0) + 1

    @classmethod
    def snapshot(cls):
        return {"hits": cls.hits, "paths": dict(cls.by_path)}

    @staticmethod
    def reset_path(path):
        RequestStats.by_path.pop(path, None)  # expect: SS105


class JsonAPI(MethodView):
    decorators = [login_required]
    init_every_request = False

    def audit(self, what):
        AUDIT.append((request.remote_addr, what))  # expect: SS105


class UserAPI(JsonAPI):
    def get(self):
        RequestStats.record(request.path)  # expect: SS106
        return jsonify(USERS)  # quiet: read

    def post(self):
        USERS.append(request.get_json())  # expect: SS105
        self.audit("create")
        return "", 201

    def delete(self):
        RequestStats.reset_path(request.path)
        USERS.clear()  # expect: SS105
        return "", 204


class StatsView(View):
    def dispatch_request(self):
        return jsonify(RequestStats.snapshot())  # quiet: classmethod that only reads


bp.add_url_rule("/users", view_func=UserAPI.as_view("users"))
bp.add_url_rule("/stats", view_func=StatsView.as_view("stats"))
