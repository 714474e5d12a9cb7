"""The GRIP origin behind Pushpin in the peer comparison: every
GET /sse?channel=C is answered with `Grip-Hold: stream` on channel C, so
Pushpin holds the stream and the publisher feeds it through Pushpin's HTTP
publish endpoint. WebSocket clients of /ws?channel=C reach it as
WebSocket-over-HTTP (the route has `over_http`): the OPEN event is answered
with a GRIP subscribe control message for C. (Pushpin did not pass on a text
frame sent in the same answer, so the load generator counts a Pushpin
WebSocket as subscribed once the handshake is done, as with Nchan.)

Usage: python3 origin.py PORT
"""

import asyncio
import sys

import tornado.web


class Sse(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Grip-Hold", "stream")
        self.set_header("Grip-Channel", self.get_argument("channel"))
        self.write(": connected\n\n")


def event(kind, content=None):
    if content is None:
        return b"%s\r\n" % kind
    return b"%s %x\r\n%s\r\n" % (kind, len(content), content)


class Ws(tornado.web.RequestHandler):
    def post(self):
        self.set_header("Content-Type", "application/websocket-events")
        body = self.request.body
        if body.startswith(b"OPEN"):
            channel = self.get_argument("channel").encode()
            self.set_header("Sec-WebSocket-Extensions", "grip")
            control = b'c:{"type":"subscribe","channel":"%s"}' % channel
            self.write(event(b"OPEN") + event(b"TEXT", control))
        elif body.startswith(b"CLOSE"):
            self.write(event(b"CLOSE"))


async def main():
    port = int(sys.argv[1])
    tornado.web.Application([(r"/sse", Sse), (r"/ws", Ws)]).listen(port, address="127.0.0.1")
    print("grip origin: serving on http://127.0.0.1:%d" % port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
