# A shared base view of the chat package (see __init__.py).
from flask.views import MethodView


class ApiView(MethodView):
    init_every_request = False
