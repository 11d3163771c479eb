# Modelled on: job-queue and to-do blueprints that guard module state with a threading.Lock (a lock
# orders threads of one process, not the other workers) and fetch an item with .get() before editing
# it (code index). Batch 2: written before the linter was changed for it. Pattern only: written anew.
import threading

from flask import Blueprint, jsonify, request

bp = Blueprint("jobs", __name__)
_lock = threading.Lock()
JOBS = {}
job_counter = 0
queue_order = []


@bp.route("/jobs", methods=["POST"])
def submit():
    global job_counter
    with _lock:  # quiet: a lock
        job_counter += 1  # expect: SS101
        JOBS[job_counter] = {"status": "queued", "payload": request.json}  # expect: SS103
        queue_order.append(job_counter)  # expect: SS105
    return jsonify(id=job_counter), 202


@bp.route("/jobs/<int:job_id>", methods=["DELETE"])
def cancel(job_id):
    job = JOBS.get(job_id)  # quiet: read
    if job is None:
        return "", 404
    job["status"] = "cancelled"  # expect: SS103
    queue_order.remove(job_id)  # expect: SS105
    return "", 204


@bp.route("/jobs")
def list_jobs():
    return jsonify([JOBS[j] for j in queue_order])  # quiet: read


@bp.route("/jobs/<int:job_id>")
def show(job_id):
    job = dict(JOBS.get(job_id, {}))
    job["seen"] = True  # quiet: a copy
    return jsonify(job)
