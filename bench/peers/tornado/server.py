"""A minimal Tornado broadcast server for the peer comparison.

GET /sse?channel=C   server-sent events (": connected" first, then one
                     "event: message" per publish)
GET /ws?channel=C    WebSocket ({"type":"subscribed"} first, then one text
                     frame per publish)
POST /publish/C      the body is sent to every subscriber of C

Usage: python3 server.py PORT
"""

import asyncio
import sys
from collections import defaultdict

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

channels = defaultdict(set)


class Sse(tornado.web.RequestHandler):
    async def get(self):
        channel = self.get_argument("channel")
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.closed = asyncio.Event()
        channels[channel].add(self)
        try:
            self.write(": connected\n\n")
            await self.flush()
            await self.closed.wait()
        except StreamClosedError:
            pass
        finally:
            channels[channel].discard(self)

    def on_connection_close(self):
        self.closed.set()

    def send(self, payload):
        self.write("event: message\ndata: %s\n\n" % payload)
        self.flush()


class Ws(tornado.websocket.WebSocketHandler):
    def open(self):
        self.channel = self.get_argument("channel")
        channels[self.channel].add(self)
        self.write_message('{"type":"subscribed"}')

    def on_close(self):
        channels[self.channel].discard(self)

    def send(self, payload):
        try:
            self.write_message(payload)
        except tornado.websocket.WebSocketClosedError:
            pass


class Publish(tornado.web.RequestHandler):
    def post(self, channel):
        payload = self.request.body.decode()
        subscribers = list(channels.get(channel, ()))
        for s in subscribers:
            s.send(payload)
        self.write('{"subscribers":%d}\n' % len(subscribers))


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8083
    app = tornado.web.Application(
        [(r"/sse", Sse), (r"/ws", Ws), (r"/publish/(.+)", Publish)]
    )
    app.listen(port, address="127.0.0.1", backlog=4096)
    print("tornado: serving on http://127.0.0.1:%d" % port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
