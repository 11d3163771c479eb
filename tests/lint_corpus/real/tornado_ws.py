# Modelled on: Tornado websocket dashboards and games (teoh/tweetmappers backend/app.py,
# garbo-a/gomoku-python-server app.py) and handlers keeping their peers in a class attribute (code
# index). Batch 2: written before the linter was changed for it. Pattern only: written anew.
import tornado.ioloop
import tornado.web
import tornado.websocket

listeners = []
scores = {}


class SocketHandler(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def open(self):
        if self not in listeners:  # quiet: read
            listeners.append(self)  # expect: SS105

    def on_close(self):
        if self in listeners:
            listeners.remove(self)  # expect: SS105


class BroadcastSocket(tornado.websocket.WebSocketHandler):
    peers = set()

    def open(self):
        BroadcastSocket.peers.add(self)  # expect: SS105

    def on_close(self):
        BroadcastSocket.peers.discard(self)  # expect: SS105

    def on_message(self, message):
        for peer in BroadcastSocket.peers:  # quiet: read
            peer.write_message(message)  # quiet: a connection's own method


class BaseHandler(tornado.web.RequestHandler):
    def get_current_user(self):
        return self.get_secure_cookie("user")


class ScoreHandler(BaseHandler):
    def get(self):
        self.write(scores)  # quiet: read

    def post(self):
        name = self.get_argument("name")
        scores[name] = scores.get(name, 0) + 1  # expect: SS103
        self.set_header("X-Count", str(len(scores)))  # quiet: per-request response


app = tornado.web.Application(
    [(r"/ws", SocketHandler), (r"/broadcast", BroadcastSocket), (r"/scores", ScoreHandler)]
)
