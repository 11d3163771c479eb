# Views of the chat package (see __init__.py): the state they change lives in other modules.
from flask import Blueprint, jsonify, request

from . import helpers
from .base import ApiView
from .helpers import add_member, describe
from .state import BANNER, ROOMS

bp = Blueprint("chat", __name__)
TOPICS = []


@bp.route("/rooms/<room>/join", methods=["POST"])
def join(room):
    add_member(room, request.sid)  # expect: SS105
    helpers.mark_online(request.sid)  # expect: SS105
    return describe(room)  # quiet: helper that only reads


@bp.route("/rooms/<room>", methods=["PUT"])
def reset_room(room):
    ROOMS[room] = []  # expect: SS103
    return BANNER  # quiet: a constant


@bp.route("/rooms")
def rooms():
    return jsonify(sorted(ROOMS))  # quiet: read


class TopicsView(ApiView):
    def post(self):
        TOPICS.append(request.json["topic"])  # expect: SS105
        return "", 201

    def get(self):
        return jsonify(TOPICS)
