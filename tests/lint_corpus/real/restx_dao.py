# Modelled on: the Flask-RESTX to-do example shape (a DAO object holding a list, namespaces decorating
# Resource classes) and production blueprints with rate limiting kept in module dicts (code index).
# Batch 4: written before the linter was changed for it. Pattern only: written anew.
import time
from collections import defaultdict, deque

from flask import Flask, request
from flask_restx import Api, Resource, fields

app = Flask(__name__)
api = Api(app)
ns = api.namespace("todos", description="TODO operations")
todo = api.model("Todo", {"id": fields.Integer, "task": fields.String})
ip_hits = defaultdict(list)
recent = deque(maxlen=1000)


class TodoDAO:
    def __init__(self):
        self.counter = 0
        self.todos = []

    def get(self, todo_id):
        for t in self.todos:
            if t["id"] == todo_id:
                return t
        api.abort(404)

    def create(self, data):
        data["id"] = self.counter = self.counter + 1
        self.todos.append(data)
        return data

    def delete(self, todo_id):
        self.todos.remove(self.get(todo_id))


DAO = TodoDAO()


def too_many(ip):
    now = time.time()
    ip_hits[ip] = [t for t in ip_hits[ip] if now - t < 60]  # expect: SS103
    ip_hits[ip].append(now)  # expect: SS105
    recent.append(now)  # expect: SS105
    return len(ip_hits[ip]) > 100


@ns.route("/")
class TodoList(Resource):
    @ns.marshal_list_with(todo)
    def get(self):
        return DAO.todos  # quiet: read

    @ns.expect(todo)
    def post(self):
        if too_many(request.remote_addr):
            api.abort(429)
        return DAO.create(api.payload), 201  # expect: SS106


@ns.route("/<int:id>")
class Todo(Resource):
    def get(self, id):
        return DAO.get(id)  # quiet: a method that only reads

    def delete(self, id):
        DAO.delete(id)  # expect: SS106
        return "", 204
