"""The classic question: a module-level object whose method mutates self, used by a view."""

from flask import Flask

app = Flask(__name__)


class SomeObj:
    def __init__(self, param):
        self.param = param

    def query(self):
        self.param += 1
        return self.param


global_obj = SomeObj(0)


@app.route("/")
def home():
    return str(global_obj.query())  # expect: SS106
