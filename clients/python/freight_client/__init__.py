"""Freight's Python client: send and receive large messages by name through a node's gRPC API.

    from freight_client import Client
    client = Client("127.0.0.1:7300")
    client.send("llm/decode/3", b"...")             # or a path: client.send(addr, "kv.bin")
    for message in client.receive("llm/decode/3"):   # messages, each with a streaming body
        with open("out.bin", "wb") as f:
            for offset, data in message.chunks():
                f.seek(offset); f.write(data)

The stubs are generated from proto/freight/v1/fabric.proto by generate.sh (grpcio-tools), never written by hand.
"""

import os
import sys

_generated = os.path.join(os.path.dirname(__file__), "_generated")
if not os.path.isdir(os.path.join(_generated, "freight")):
    raise ImportError(f"freight_client: stubs missing in {_generated}; run clients/python/generate.sh")
if _generated not in sys.path:
    sys.path.insert(0, _generated)

import grpc  # noqa: E402
from freight.v1 import fabric_pb2 as pb  # noqa: E402
from freight.v1 import fabric_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["Client", "Message", "pb"]

CHUNK_BYTES = 1 << 20
# Room for one chunk and its framing in either direction.
MESSAGE_BYTES_MAX = 80 << 20


class MessageFailed(Exception):
    """A message failed before its end (its sender vanished, a chunk failed its checksum). The receive loop goes on
    with the next message."""

    def __init__(self, message_id, reason):
        super().__init__(f"message {message_id:x} failed: {reason}")
        self.message_id = message_id
        self.reason = reason


class Message:
    """One received message. Read its body with chunks() before taking the next message."""

    def __init__(self, start, stream):
        self.id = start.message_id
        self.source = start.source
        self.destination = start.destination
        self.length = start.length
        self.content_type = start.content_type
        self.attributes = dict(start.attributes)
        self.path = list(start.path)
        # Where the sender asks for a reply (Client.reply); "" when it asked for none.
        self.reply_to = start.reply_to
        # The W3C trace context the message carries ("" when none): start this receiver's span as its child,
        # e.g. with OpenTelemetry's TraceContextTextMapPropagator().extract({"traceparent": m.traceparent}).
        self.traceparent = start.traceparent
        self.tracestate = start.tracestate
        # The filters that ran on the body on its way, in order ("NODE/MODULE@SHA256-PREFIX"): its encoding, when a
        # filter changed it (docs/functions.md).
        self.filters = list(start.filters)
        self._stream = stream
        self._done = False

    def chunks(self):
        """Yields (offset, bytes) until the body is complete. Chunks may come out of order; they cover the body once.
        Raises MessageFailed when the message fails before its end; the receive loop goes on."""
        while not self._done:
            response = next(self._stream)
            kind = response.WhichOneof("event")
            if kind == "chunk":
                yield response.chunk.offset, response.chunk.data
            elif kind == "end":
                self._done = True
            elif kind == "failed":
                self._done = True
                raise MessageFailed(self.id, response.failed.reason)
            else:
                raise RuntimeError(f"unexpected {kind} inside message {self.id}")

    def read(self):
        """The whole body as bytes."""
        body = bytearray(self.length)
        for offset, data in self.chunks():
            body[offset:offset + len(data)] = data
        return bytes(body)

    def write_to(self, path):
        """Writes the body to `path`; returns the byte count."""
        total = 0
        with open(path, "wb") as f:
            f.truncate(self.length)
            for offset, data in self.chunks():
                f.seek(offset)
                f.write(data)
                total += len(data)
        return total

    def _drain(self):
        for _ in self.chunks():
            pass


class Client:
    """A connection to one node's gRPC API (`freight node --grpc HOST:PORT`)."""

    def __init__(self, target, chunk_bytes=CHUNK_BYTES, token=None):
        """`token`: the secret of a token of the node's access list (`freight node --access`), sent with every call
        as `authorization: Bearer SECRET`; a node with an access list refuses calls without one (UNAUTHENTICATED)."""
        self.chunk_bytes = chunk_bytes
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ],
        )
        self.stub = pb_grpc.FabricServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, address, body, content_type="application/octet-stream", attributes=None, reply_to="",
             traceparent=None, tracestate=None):
        """Sends `body` (bytes, or a file path) to `address`; returns the SendResponse once delivered.
        `reply_to`: an address the receiver may answer to (its Message.reply_to). `traceparent`/`tracestate`: the
        W3C trace context the message joins (sent as the call's metadata, as OpenTelemetry's gRPC instrumentation
        does); the receiver sees it as Message.traceparent.
        Raises grpc.RpcError: NOT_FOUND (no route), INVALID_ARGUMENT (bad address), ABORTED (receiver gone)."""
        if isinstance(body, (bytes, bytearray, memoryview)):
            view = memoryview(body)
            length = len(view)

            def parts():
                for start in range(0, length, self.chunk_bytes):
                    yield bytes(view[start:start + self.chunk_bytes])
        else:
            path = os.fspath(body)
            length = os.path.getsize(path)

            def parts():
                with open(path, "rb") as f:
                    while True:
                        data = f.read(self.chunk_bytes)
                        if not data:
                            return
                        yield data

        header = pb.SendHeader(
            destination=address, length=length, content_type=content_type, attributes=attributes or {},
            reply_to=reply_to,
        )

        def requests():
            yield pb.SendRequest(header=header)
            for data in parts():
                yield pb.SendRequest(data=data)

        metadata = list(self.metadata or ())
        if traceparent:
            metadata.append(("traceparent", traceparent))
        if tracestate:
            metadata.append(("tracestate", tracestate))
        return self.stub.Send(requests(), metadata=tuple(metadata) or None)

    def reply(self, message, body, content_type="application/octet-stream", attributes=None):
        """Sends `body` as the reply to `message` (to its reply_to), as a Swift client's request() waits for.
        Raises ValueError when the message asked for no reply."""
        if not message.reply_to:
            raise ValueError(f"message {message.id:x} from {message.source} asks for no reply")
        return self.send(message.reply_to, body, content_type=content_type, attributes=attributes)

    def receive(self, pattern, group="", registered=None):
        """Registers an endpoint on `pattern` and yields its messages as they arrive (until the caller stops).
        `registered`, if given, is called with the Registered reply once the endpoint exists."""
        stream = self.stub.Receive(pb.ReceiveRequest(pattern=pattern, group=group), metadata=self.metadata)
        first = next(stream)
        if first.WhichOneof("event") != "registered":
            raise RuntimeError("the node did not confirm the registration")
        if registered is not None:
            registered(first.registered)
        try:
            current = None
            for response in stream:
                if current is not None and not current._done:
                    raise RuntimeError("a message started before the previous one ended")
                kind = response.WhichOneof("event")
                if kind != "start":
                    raise RuntimeError(f"expected a message start, got {kind}")
                current = Message(response.start, stream)
                yield current
                try:
                    current._drain()
                except MessageFailed:
                    pass  # the caller did not read it; it failed, and the next message comes
        finally:
            stream.cancel()

    def resolve(self, pattern):
        """Endpoints matching `pattern`: (list of Endpoint, truncated)."""
        reply = self.stub.Resolve(pb.ResolveRequest(pattern=pattern), metadata=self.metadata)
        return list(reply.endpoints), reply.truncated

    def watch(self, pattern):
        """Yields WatchResponse events: ADDED for each existing endpoint, SYNCED, then changes."""
        return self.stub.Watch(pb.WatchRequest(pattern=pattern), metadata=self.metadata)

    def status(self):
        return self.stub.Status(pb.StatusRequest())

    def attach_filter(self, pattern, module, name="", config=""):
        """Attaches a WebAssembly filter at this node (docs/functions.md): messages to `pattern` that open from now on
        run through it. `module`: the module's bytes, or the path of a .wasm or .wat file. Returns the filters now
        attached (list of Filter)."""
        if isinstance(module, str):
            if not name:
                name = os.path.basename(module).split(".")[0]
            with open(module, "rb") as f:
                module = f.read()
        request = pb.AttachFilterRequest(pattern=pattern, module=module, name=name, config=config)
        return list(self.stub.AttachFilter(request, metadata=self.metadata).filters)

    def detach_filter(self, pattern):
        """Detaches the filters on `pattern`; returns how many there were."""
        return self.stub.DetachFilter(pb.DetachFilterRequest(pattern=pattern), metadata=self.metadata).detached

    def filters(self):
        """The filters attached at this node, in order (list of Filter: pattern, name, sha256, config, resumable)."""
        return list(self.stub.ListFilters(pb.ListFiltersRequest(), metadata=self.metadata).filters)
