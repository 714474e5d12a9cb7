"""WebSocket subscribers that negotiate permessage-deflate, as the Python
`websockets` library does by default: SUBSCRIBERS clients subscribe to
`news`, the first of them publishes MESSAGES messages of SIZE characters
(in compressed frames of its own), and every client must receive every
message, in order. Prints one JSON line: what was negotiated and received.

    python3 ws_deflate.py ws://127.0.0.1:8080 SUBSCRIBERS MESSAGES SIZE
"""

import asyncio
import json
import sys

import websockets


async def subscriber(url):
    ws = await websockets.connect(
        url + "/comet/ws?channel=news",
        compression="deflate",
        max_size=1 << 20,
        open_timeout=60,
        ping_interval=None,
    )
    while json.loads(await ws.recv())["type"] != "subscribed":
        pass
    return ws


async def receive(ws, count):
    got = []
    while len(got) < count:
        frame = json.loads(await ws.recv())
        if frame["type"] == "message":
            got.append(frame["data"])
    return got


async def main(url, subscribers, messages, size):
    clients = []
    # In batches: a few hundred handshakes at once, not thousands.
    for start in range(0, subscribers, 200):
        batch = range(start, min(start + 200, subscribers))
        clients += await asyncio.gather(*(subscriber(url) for _ in batch))
    publisher = clients[0]
    # `response` since websockets 14; `response_headers` before.
    response = getattr(publisher, "response", None)
    headers = response.headers if response else publisher.response_headers
    extensions = headers.get("Sec-WebSocket-Extensions")
    readers = [asyncio.create_task(receive(ws, messages)) for ws in clients[1:]]
    sent = [f"{i:04d} " + "comet " * (size // 6) for i in range(messages)]
    own = []
    for i, data in enumerate(sent):
        await publisher.send(json.dumps({"op": "publish", "channel": "news", "data": data, "id": i}))
        # The ack, and the message itself (the publisher is subscribed).
        while True:
            frame = json.loads(await publisher.recv())
            if frame["type"] == "message":
                own.append(frame["data"])
            elif frame["type"] == "ack" and frame["id"] == i:
                break
            elif frame["type"] == "error":
                raise SystemExit(f"publish refused: {frame}")
    others = await asyncio.wait_for(asyncio.gather(*readers), 120)
    own += await receive(publisher, messages - len(own))
    every = [own] + list(others)
    print(json.dumps({
        "extensions": extensions,
        "clients": len(every),
        "all_received": all(got == sent for got in every),
    }))
    for ws in clients:
        await ws.close()


if __name__ == "__main__":
    url, subscribers, messages, size = sys.argv[1], *map(int, sys.argv[2:5])
    asyncio.run(main(url, subscribers, messages, size))
