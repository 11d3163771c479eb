# Look-alikes in instrumented Flask apps: Prometheus metrics (shreyastambe103/DevOps-CA2
# task4-prometheus-grafana/metrics.py and others in the code index), a thread pool, a scheduler, a
# model loaded at import, per-request response headers. Batch 2: written before the linter was changed
# for it. Pattern only: written anew.
import time
from concurrent.futures import ThreadPoolExecutor

import joblib
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, Response, g, request
from prometheus_client import Counter, Histogram, generate_latest

app = Flask(__name__)
REQUEST_COUNT = Counter("request_count", "App Request Count", ["method", "endpoint"])
REQUEST_LATENCY = Histogram("request_latency_seconds", "Latency", ["endpoint"])
UPLOADS = Counter("uploads_total", "Uploads")
executor = ThreadPoolExecutor(max_workers=2)
scheduler = BackgroundScheduler()
model = joblib.load("model.pkl")
ALLOWED_EXTENSIONS = {"png", "jpg"}


@app.before_request
def start_timer():
    g.start = time.time()  # quiet: per-request g


@app.after_request
def record(response):
    REQUEST_LATENCY.labels(request.path).observe(time.time() - g.start)  # quiet: prometheus metric
    REQUEST_COUNT.labels(request.method, request.path).inc()  # quiet: prometheus metric
    response.headers.update({"X-Served-By": "app"})  # quiet: per-request response
    return response


@app.route("/predict", methods=["POST"])
def predict():
    features = request.get_json()["features"]
    result = model.predict([features])  # quiet: read-only model
    executor.submit(print, result)  # quiet: thread pool
    scheduler.add_job(print, args=[result])  # quiet: scheduler
    return {"result": result.tolist()}


@app.route("/upload", methods=["POST"])
def upload():
    ext = request.files["f"].filename.rsplit(".", 1)[-1]
    if ext not in ALLOWED_EXTENSIONS:  # quiet: read
        return "", 400
    UPLOADS.inc()  # quiet: prometheus metric
    return "ok"


@app.route("/metrics")
def metrics():
    return Response(generate_latest(), mimetype="text/plain")
