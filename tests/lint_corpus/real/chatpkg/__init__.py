# A small package: state in one module, helpers that change it in another, and views that call the
# helpers. Modelled on multi-module Flask-SocketIO chat apps (state.py / helpers.py / views.py split).
# Pattern only: written anew.
