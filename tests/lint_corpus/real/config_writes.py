# Runtime writes to the application's config from request handlers: app.config is one dict per
# process, so a write reaches only the worker that served the request. Modelled on a config API
# blueprint (mikebionic/sagmen_hekimbot main/views/config_api.py) and request counters kept in
# app.config. Pattern only: written anew.
from flask import Blueprint, Flask, current_app, jsonify, request

bp = Blueprint("config_api", __name__)
app = Flask(__name__)
app.config["SECRET_KEY"] = "dev"  # quiet: import time
app.config.from_mapping(HITS=0)  # quiet: import time
app.config["HITS"] = 0  # quiet: import time


def create_app():
    new = Flask(__name__)
    new.config["FEATURE_X"] = True  # quiet: app factory, not a request
    new.register_blueprint(bp)
    return new


@bp.post("/config/")
def set_config():
    if request.args.get("key") != current_app.config["ADMIN_KEY"]:  # quiet: read
        return "", 403
    current_app.config["FEATURE_X"] = request.json["feature_x"]  # expect: SS107
    current_app.config.update(request.json)  # expect: SS107
    return jsonify(dict(current_app.config))


@bp.get("/config/")
def get_config():
    return jsonify({"interval": current_app.config.get("INTERVAL", 60)})  # quiet: read


@app.route("/hit")
def hit():
    app.config["HITS"] += 1  # expect: SS107
    return str(app.config["HITS"])


@app.route("/debug/<flag>")
def debug(flag):
    app.config["DEBUG_TOOLBAR"] = flag == "on"  # expect: SS107
    return "ok"
