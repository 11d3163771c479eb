# Modelled on: the flask-restful to-do quickstart as found in many repositories (e.g.
# minwook-shin/learning-code python/flask-restful-test/get_put_del.py, Dude245/CIS-3210 Lab2/host.py),
# with the resources deriving from an intermediate base class. Pattern only: written anew.
from flask import Flask, request
from flask_restful import Api, Resource, abort, reqparse

app = Flask(__name__)
api = Api(app)

TODOS = {
    "todo1": {"task": "build an API"},
    "todo2": {"task": "?????"},
}

parser = reqparse.RequestParser()
parser.add_argument("task")  # quiet: import time, not a request


def abort_if_missing(todo_id):
    if todo_id not in TODOS:  # quiet: read
        abort(404, message=f"Todo {todo_id} doesn't exist")


class AuthedResource(Resource):
    method_decorators = []

    def current_user(self):
        return request.headers.get("X-User")


class Todo(AuthedResource):
    def get(self, todo_id):
        abort_if_missing(todo_id)
        return TODOS[todo_id]  # quiet: read

    def delete(self, todo_id):
        abort_if_missing(todo_id)
        del TODOS[todo_id]  # expect: SS103
        return "", 204

    def put(self, todo_id):
        args = parser.parse_args()  # quiet: per-request parse
        task = {"task": args["task"]}
        TODOS[todo_id] = task  # expect: SS103
        return task, 201


class TodoList(AuthedResource):
    def get(self):
        return TODOS

    def post(self):
        args = parser.parse_args()
        todo_id = f"todo{len(TODOS) + 1}"
        TODOS[todo_id] = {"task": args["task"], "by": self.current_user()}  # expect: SS103
        return TODOS[todo_id], 201


api.add_resource(TodoList, "/todos")
api.add_resource(Todo, "/todos/<todo_id>")
