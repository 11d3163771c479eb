# Modelled on: single-file Flask-SQLAlchemy apps (models, login and routes in app.py), with
# Flask-Login's user_loader, a plugin registry filled by a decorator at import time and a model loaded
# once per process in before_first_request (code index). Batch 3: written before the linter was changed
# for it. Pattern only: written anew.
from functools import wraps

from flask import Flask, abort, jsonify, request
from flask_login import LoginManager, login_required
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
db = SQLAlchemy(app)
login_manager = LoginManager(app)
ACTIONS = {}
MODEL = None
recent_logins = []


class User(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80))
    visits = db.Column(db.Integer, default=0)


def action(fn):
    ACTIONS[fn.__name__] = fn  # quiet: import time, when the decorator is applied
    return fn


def audited(fn):
    calls = []  # quiet: decoration time

    @wraps(fn)
    def inner(*args, **kwargs):
        recent_logins.append(request.remote_addr)  # expect: SS105
        return fn(*args, **kwargs)

    calls.append(fn.__name__)  # quiet: decoration time
    return inner


@login_manager.user_loader
def load_user(user_id):
    return User.query.get(int(user_id))  # quiet: database


@app.before_first_request
def load_model():
    global MODEL
    MODEL = {"weights": [1, 2, 3]}  # quiet: once per process, before the first request


@app.route("/users/<int:user_id>", methods=["PUT"])
@login_required
@action
def rename_user(user_id):
    user = User.query.get(user_id)  # quiet: database
    if user is None:
        abort(404)
    user.name = request.json["name"]  # quiet: a model instance of this request
    user.visits += 1  # quiet: a model instance of this request
    db.session.commit()
    return jsonify(name=user.name)


@app.route("/users/<int:user_id>/visits", methods=["POST"])
@audited
def visit(user_id):
    for row in User.query.filter_by(id=user_id).all():
        row.visits += 1  # quiet: rows of this request
    db.session.commit()
    return "ok"


@app.route("/predict")
def predict():
    return jsonify(MODEL["weights"])  # quiet: read
