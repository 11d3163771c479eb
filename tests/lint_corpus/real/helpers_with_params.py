# Modelled on: small apps that pass their module-level store into a helper (`add_item(ITEMS, item)`)
# and call it from several routes, and whose helpers read settings from a class with constants
# (code index). Batch 3: written before the linter was changed for it. Pattern only: written anew.
from flask import Flask, jsonify, request

app = Flask(__name__)

ITEMS = []
INDEX = {}


class Config:
    PAGE_SIZE = 20
    ALLOWED = ("a", "b")


def add_item(store, index, item):
    store.append(item)
    index[item["id"]] = item
    return item


def page(items, number):
    chunk = items[number * Config.PAGE_SIZE : (number + 1) * Config.PAGE_SIZE]  # quiet: read
    chunk.append({"more": len(items) > (number + 1) * Config.PAGE_SIZE})  # quiet: a new slice
    return chunk


@app.route("/items", methods=["POST"])
def create():
    item = add_item(ITEMS, INDEX, request.json)  # expect: SS105
    return jsonify(item), 201


@app.route("/items")
def list_items():
    return jsonify(page(ITEMS, int(request.args.get("page", 0))))  # quiet: read


@app.route("/items/<item_id>", methods=["DELETE"])
def delete(item_id):
    item = INDEX.pop(item_id, None)  # expect: SS105
    if item is not None:
        ITEMS.remove(item)  # expect: SS105
    return "", 204
