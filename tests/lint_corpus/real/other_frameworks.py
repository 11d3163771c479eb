# Handlers of other Python web frameworks next to Flask-CLI commands and tests that must stay quiet:
# Dash callbacks (a Flask server underneath), aiohttp's add_get, Falcon resources, Bottle routes.
# Modelled on small apps of each framework in the code index. Batch 7: written after the linter was
# last changed and measured as it was (held out), then Dash and aiohttp were added. Pattern only.
import unittest

import falcon
from aiohttp import web
from bottle import post, route
from dash import Dash, Input, Output, html
from flask import Flask

server = Flask(__name__)
dash_app = Dash(__name__, server=server)
dash_app.layout = html.Div([html.Button(id="btn"), html.Div(id="out")])
clicks = []
aio_hits = {}
things = []
guestbook = []


@dash_app.callback(Output("out", "children"), Input("btn", "n_clicks"))
def on_click(n):
    clicks.append(n)  # expect: SS105
    return str(len(clicks))


async def hello(request):
    aio_hits[request.path] = aio_hits.get(request.path, 0) + 1  # expect: SS103
    return web.Response(text="hi")


aio = web.Application()
aio.router.add_get("/", hello)


class ThingsResource:
    def on_get(self, req, resp):
        resp.media = things  # quiet: read

    def on_post(self, req, resp):
        things.append(req.media)  # expect: SS105


falcon_app = falcon.App()
falcon_app.add_route("/things", ThingsResource())


@route("/guestbook")
def show():
    return "\n".join(guestbook)  # quiet: read


@post("/guestbook")
def sign():
    guestbook.append("entry")  # expect: SS105
    return "ok"


@server.cli.command("reset")
def reset():
    clicks.clear()  # quiet: a CLI command, not a request


class GuestbookTest(unittest.TestCase):
    def setUp(self):
        guestbook.clear()  # quiet: a test

    def test_sign(self):
        guestbook.append("x")  # quiet: a test
