# Database and client objects whose method names look like container mutation. Modelled on
# flask-pymongo task managers (UtkJaiswal/ToDoList-Flask todo.py, KwabenaK003/task_manager
# commands.py) and Elasticsearch/Mongo clients in Flask apps. Pattern only: written anew. The
# database is the shared state here, and it is already shared correctly: nothing to report.
import boto3
import pymongo
from elasticsearch import Elasticsearch
from flask import Flask, jsonify, request
from flask_pymongo import PyMongo
from flask_sqlalchemy import SQLAlchemy

from .models import Task

app = Flask(__name__)
app.config["MONGO_URI"] = "mongodb://localhost:27017/tasks"
mongo = PyMongo(app)
db = SQLAlchemy(app)
es = Elasticsearch("http://localhost:9200")
client = pymongo.MongoClient("mongodb://localhost")
collection = client["taskdb"]["tasks"]
tasks = mongo.db.tasks
s3 = boto3.client("s3")


@app.route("/tasks/<task_id>", methods=["POST"])
def edit_task(task_id):
    mongo.db.tasks.update({"_id": task_id}, {"$set": request.form.to_dict()})  # quiet: database
    return "ok"


@app.route("/tasks/<task_id>/done", methods=["POST"])
def done(task_id):
    tasks.update_one({"_id": task_id}, {"$set": {"done": True}})  # quiet: database
    tasks.remove({"done": True})  # quiet: database
    return "ok"


@app.route("/search/<doc_id>", methods=["PUT"])
def reindex(doc_id):
    es.update(index="docs", id=doc_id, body={"doc": request.json})  # quiet: search cluster
    return jsonify(es.get(index="docs", id=doc_id))


@app.route("/insert", methods=["POST"])
def insert():
    collection.insert_one(request.json)  # quiet: database
    collection.update({"a": 1}, {"$set": {"b": 2}})  # quiet: database
    return "ok"


@app.route("/sql", methods=["POST"])
def add_sql():
    db.session.add(Task(title=request.form["title"]))  # quiet: per-request session
    db.session.commit()
    return "ok"


@app.route("/upload", methods=["POST"])
def upload():
    s3.put_object(Bucket="b", Key="k", Body=request.data)  # quiet: object store
    return "ok"
