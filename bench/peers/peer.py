#!/usr/bin/env python3
"""One end of a peer system's transfer, run as its own process by run.py:

    peer.py ROLE --size BYTES --count N [--port P]

ROLE is nats-send, nats-recv, zmq-send, zmq-recv, grpc-send or grpc-recv. Receivers print {"ready": ...} once
they can receive, then {"done": t} with time.monotonic() when the last byte of the last message arrived; senders
print {"start": t} right before the first send. Both print their own CPU seconds when they became ready
({"cpu0": s}) and at the end ({"cpu": s}), so that start-up is not counted.
time.monotonic() is CLOCK_MONOTONIC, shared by every process of the machine, so run.py can subtract them.
"""

import argparse
import asyncio
import json
import sys
import time


def say(**fields):
    print(json.dumps(fields), flush=True)


def payload(size):
    # The same bytes for every message, as iperf3 reuses its buffer: the transfer is measured, not a generator.
    block = bytes(range(256)) * 4096
    return (block * (size // len(block) + 1))[:size]


# NATS: one publisher, one subscriber, nats-server in between (max_payload 64 MB, its maximum).
async def nats_recv(args):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{args.port}", max_reconnect_attempts=0)
    done = asyncio.Event()
    state = {"messages": 0, "bytes": 0}

    async def handler(msg):
        state["messages"] += 1
        state["bytes"] += len(msg.data)
        if state["messages"] == args.count:
            say(done=time.monotonic(), bytes=state["bytes"])
            done.set()

    await nc.subscribe("bench", cb=handler, pending_msgs_limit=1_000_000, pending_bytes_limit=4 << 30)
    await nc.flush()
    say(ready=True, cpu0=time.process_time())
    await done.wait()
    await nc.close()


async def nats_send(args):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{args.port}", max_reconnect_attempts=0, pending_size=1 << 30)
    data = payload(args.size)
    say(start=time.monotonic(), cpu0=time.process_time())
    for _ in range(args.count):
        await nc.publish("bench", data)
    await nc.flush(timeout=600)
    await nc.close()


# NATS request/reply: a responder that answers every request with its own bytes, and a requester that sends one
# request at a time and times each round trip (the first 100 not counted).
async def nats_reply(args):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{args.port}", max_reconnect_attempts=0)

    async def handler(msg):
        await msg.respond(msg.data)

    await nc.subscribe("rr", cb=handler)
    await nc.flush()
    say(ready=True, cpu0=time.process_time())
    await asyncio.Event().wait()


async def nats_request(args):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{args.port}", max_reconnect_attempts=0)
    data = payload(args.size)
    for _ in range(100):
        await nc.request("rr", data, timeout=10)
    micros = []
    for _ in range(args.count):
        sent = time.perf_counter()
        await nc.request("rr", data, timeout=10)
        micros.append((time.perf_counter() - sent) * 1e6)
    micros.sort()
    say(p50_us=micros[len(micros) // 2], p99_us=micros[min(len(micros) - 1, len(micros) * 99 // 100)])
    await nc.close()


# ZeroMQ: PUSH/PULL over TCP, zero-copy sends.
def zmq_recv(args):
    import zmq

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{args.port}")
    say(ready=True, cpu0=time.process_time())
    total = 0
    for _ in range(args.count):
        frame = pull.recv(copy=False)
        total += len(frame.buffer)
    say(done=time.monotonic(), bytes=total)
    pull.close(linger=0)
    context.term()


def zmq_send(args):
    import zmq

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 16)
    push.connect(f"tcp://127.0.0.1:{args.port}")
    data = payload(args.size)
    time.sleep(0.2)  # the connection is made in the background
    say(start=time.monotonic(), cpu0=time.process_time())
    for _ in range(args.count):
        push.send(data, copy=False)
    push.close(linger=-1)  # waits until everything went
    context.term()


# gRPC: each message is one client-streaming call of 4 MiB chunks (raw bytes, no protobuf copy).
CHUNK = 4 << 20


def grpc_recv(args):
    import grpc
    from concurrent import futures

    state = {"messages": 0, "bytes": 0}

    def take(request_iterator, context):
        for chunk in request_iterator:
            state["bytes"] += len(chunk)
        state["messages"] += 1
        if state["messages"] == args.count:
            say(done=time.monotonic(), bytes=state["bytes"])
            finished.set()
        return b""

    import threading

    finished = threading.Event()
    handler = grpc.method_handlers_generic_handler(
        "bench.Sink", {"Take": grpc.stream_unary_rpc_method_handler(take)}
    )
    options = [("grpc.max_receive_message_length", 2 * CHUNK), ("grpc.max_send_message_length", 2 * CHUNK)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler], options=options)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    say(ready=True, cpu0=time.process_time())
    finished.wait()
    server.stop(grace=5).wait()  # the last call's answer still goes out


def grpc_send(args):
    import grpc

    options = [("grpc.max_receive_message_length", 2 * CHUNK), ("grpc.max_send_message_length", 2 * CHUNK)]
    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}", options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    take = channel.stream_unary("/bench.Sink/Take")
    data = payload(args.size)
    view = memoryview(data)

    def chunks():
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])

    say(start=time.monotonic(), cpu0=time.process_time())
    for _ in range(args.count):
        take(chunks())
    channel.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    roles = {
        "nats-recv": lambda: asyncio.run(nats_recv(args)),
        "nats-send": lambda: asyncio.run(nats_send(args)),
        "nats-reply": lambda: asyncio.run(nats_reply(args)),
        "nats-request": lambda: asyncio.run(nats_request(args)),
        "zmq-recv": lambda: zmq_recv(args),
        "zmq-send": lambda: zmq_send(args),
        "grpc-recv": lambda: grpc_recv(args),
        "grpc-send": lambda: grpc_send(args),
    }
    roles[args.role]()
    say(cpu=time.process_time(), peak=peak_rss())


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
