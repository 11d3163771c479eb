# A FastAPI websocket service split in modules: the connection manager of the FastAPI documentation's
# websocket chapter (one list of connections per process) imported by the routes. Batch 5: written
# before the linter was changed for it. Pattern only: written anew.
