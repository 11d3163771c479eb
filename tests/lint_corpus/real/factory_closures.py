# State held in the locals of an app factory and changed by the routes defined inside it: one copy
# per process, like a module-level object. Modelled on create_app() factories with nested routes
# (the fleaker_config example in the code index, Flask tutorial-style factories). Pattern only.
from flask import Flask, jsonify, request


def create_app(test_config=None):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "dev"  # quiet: factory body, not a request
    visits = {}
    messages = []
    counter = 0
    settings = dict(theme="light")
    settings["lang"] = "en"  # quiet: factory body, not a request

    @app.route("/")
    def index():
        ip = request.remote_addr
        visits[ip] = visits.get(ip, 0) + 1  # expect: SS103
        return jsonify(visits)

    @app.route("/messages", methods=["POST"])
    def post_message():
        messages.append(request.json["text"])  # expect: SS105
        return "", 201

    @app.route("/count")
    def count():
        nonlocal counter
        counter += 1  # expect: SS101
        return str(counter)

    @app.route("/theme/<name>")
    def theme(name):
        settings.update(theme=name)  # expect: SS105
        return "ok"

    @app.route("/local")
    def local():
        found = []
        found.append(len(messages))  # quiet: local list
        mine = {}
        mine["n"] = len(visits)  # quiet: local dict
        return jsonify(found, mine)

    return app
