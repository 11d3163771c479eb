# Modelled on: the widely copied "REST API with Flask" to-do service shape (a `tasks` list of dicts,
# items found with a list comprehension, then edited), and user lists edited in a for loop (code
# index). Batch 2: written before the linter was changed for it. Pattern only: written anew.
from flask import Flask, abort, jsonify, request

app = Flask(__name__)

tasks = [{"id": 1, "title": "Buy groceries", "done": False}]
users = [{"id": 1, "name": "ada"}]


@app.route("/todo/api/v1.0/tasks", methods=["GET"])
def get_tasks():
    return jsonify({"tasks": tasks})  # quiet: read


@app.route("/todo/api/v1.0/tasks/<int:task_id>", methods=["GET"])
def get_task(task_id):
    task = [t for t in tasks if t["id"] == task_id]  # quiet: read
    if len(task) == 0:
        abort(404)
    return jsonify({"task": task[0]})


@app.route("/todo/api/v1.0/tasks", methods=["POST"])
def create_task():
    if not request.json or "title" not in request.json:
        abort(400)
    task = {"id": tasks[-1]["id"] + 1, "title": request.json["title"], "done": False}
    task["tags"] = []  # quiet: a new local dict
    tasks.append(task)  # expect: SS105
    return jsonify({"task": task}), 201


@app.route("/todo/api/v1.0/tasks/<int:task_id>", methods=["PUT"])
def update_task(task_id):
    task = [t for t in tasks if t["id"] == task_id]
    if len(task) == 0:
        abort(404)
    task[0]["title"] = request.json.get("title", task[0]["title"])  # expect: SS103
    task[0]["done"] = request.json.get("done", task[0]["done"])  # expect: SS103
    return jsonify({"task": task[0]})


@app.route("/todo/api/v1.0/tasks/<int:task_id>", methods=["DELETE"])
def delete_task(task_id):
    task = [t for t in tasks if t["id"] == task_id]
    if len(task) == 0:
        abort(404)
    tasks.remove(task[0])  # expect: SS105
    return jsonify({"result": True})


@app.route("/users/<int:uid>", methods=["PATCH"])
def rename(uid):
    for user in users:
        if user["id"] == uid:
            user["name"] = request.json["name"]  # expect: SS103
    return "ok"


@app.route("/users/names")
def names():
    found = []
    for user in users:
        found.append(user["name"])  # quiet: a local list
    return jsonify(found)
