"""The GRIP origin behind Pushpin in the peer comparison: every
GET /sse?channel=C is answered with `Grip-Hold: stream` on channel C, so
Pushpin holds the stream and the publisher feeds it through Pushpin's HTTP
publish endpoint.

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


async def main():
    port = int(sys.argv[1])
    tornado.web.Application([(r"/sse", Sse)]).listen(port, address="127.0.0.1")
    print("grip origin: serving on http://127.0.0.1:%d" % port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
