"""The Python client against real Freight nodes. Freight's Swift tests start two nodes with --grpc and run this
with FREIGHT_GRPC_N1 and FREIGHT_GRPC_N2 set to their gRPC addresses."""

import array
import hashlib
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import grpc  # noqa: E402
from freight_client import Client, MessageFailed, pb  # noqa: E402

N1 = os.environ.get("FREIGHT_GRPC_N1", "127.0.0.1:7300")
N2 = os.environ.get("FREIGHT_GRPC_N2", "127.0.0.2:7300")
MiB = 1 << 20


def pattern(length, seed):
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    return (block * (length // len(block) + 1))[:length]


class ClientTests(unittest.TestCase):
    def setUp(self):
        self.n1 = Client(N1)
        self.n2 = Client(N2)

    def tearDown(self):
        self.n1.close()
        self.n2.close()

    def wait_for(self, address, count=1, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            endpoints, _ = self.n1.resolve(address)
            if len(endpoints) == count:
                return
            time.sleep(0.05)
        self.fail(f"{address} never resolved to {count} endpoints")

    def start_receiver(self, address, handle, client=None):
        """Runs `handle(message)` for the first message on `address` at `client` (n2 unless given), in a thread;
        returns (thread, result)."""
        result = {}
        ready = threading.Event()
        client = client or self.n2

        def run():
            try:
                for message in client.receive(address, registered=lambda _: ready.set()):
                    result["value"] = handle(message)
                    break
            except Exception as error:  # reported by the test
                result["error"] = error
            ready.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.assertTrue(ready.wait(10))
        self.wait_for(address)
        return thread, result

    def test_small_message_round_trip(self):
        thread, result = self.start_receiver("py/small", lambda m: (m.read(), m.source, m.path))
        reply = self.n1.send("py/small", b"hello, fabric", attributes={"k": "v"})
        thread.join(10)
        body, source, path = result["value"]
        self.assertEqual(body, b"hello, fabric")
        self.assertEqual(reply.bytes, 13)
        self.assertEqual(list(reply.deliveries[0].path), ["n1", "n2"])
        self.assertEqual(path, ["n1", "n2"])
        self.assertTrue(source.endswith("/grpc"))

    def test_request_and_reply(self):
        """A message sent with reply_to is answered with Client.reply, into an inbox of the sender's node."""
        waiting, inbox = self.start_receiver(
            "_inbox/n1/py/*", lambda m: (m.destination, m.read()), client=self.n1)
        thread, result = self.start_receiver(
            "py/echo", lambda m: (m.reply_to, self.n2.reply(m, m.read()[::-1]).bytes))
        self.n1.send("py/echo", b"request", reply_to="_inbox/n1/py/1")
        thread.join(10)
        waiting.join(10)
        self.assertNotIn("error", result)
        self.assertEqual(result["value"], ("_inbox/n1/py/1", 7))
        self.assertNotIn("error", inbox)
        self.assertEqual(inbox.get("value"), ("_inbox/n1/py/1", b"tseuqer"))

        # Another node's inboxes are its own; a reply_to must be an address.
        with self.assertRaises(grpc.RpcError) as caught:
            next(self.n2.receive("_inbox/n1/py/*"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.send("py/echo", b"x", reply_to="py/Bad")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_trace_context_reaches_the_receiver(self):
        """A message sent with a W3C traceparent arrives with the same trace (docs/observability.md)."""
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        thread, result = self.start_receiver("py/traced", lambda m: (m.traceparent, m.read()))
        self.n1.send("py/traced", b"traced", traceparent=f"00-{trace}-00f067aa0ba902b7-01", tracestate="freight=1")
        thread.join(10)
        self.assertNotIn("error", result)
        traceparent, body = result["value"]
        self.assertEqual(body, b"traced")
        self.assertEqual(traceparent.split("-")[1], trace, traceparent)

        thread, result = self.start_receiver("py/untraced", lambda m: (m.traceparent, m.read())[0])
        self.n1.send("py/untraced", b"x")
        thread.join(10)
        self.assertEqual(result.get("value"), "")

    def test_a_filter_attached_at_run_time(self):
        """A filter attached through the API (docs/functions.md) downcasts fp32 to bf16 on the way, and the receiver
        is told it ran; detached, bodies pass unchanged; a module that is not Freight's ABI is refused."""
        examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "functions")
        attached = self.n1.attach_filter("py/tensors/**", os.path.join(examples, "downcast.wat"))
        self.assertEqual([(f.pattern, f.name, f.resumable) for f in attached], [("py/tensors/**", "downcast", True)])
        values = array.array("f", [1.0, -2.5, 3.14159, 1e-40, float("inf"), float("nan"), 65504.0, 1.00390625])
        values = values * 8192  # 256 KiB
        words = array.array("I", values.tobytes())
        expected = array.array("H", [((w >> 16) | 0x40) if (w & 0x7FFFFFFF) > 0x7F800000
                                     else ((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words])
        try:
            thread, result = self.start_receiver("py/tensors/w", lambda m: (m.read(), m.filters))
            self.n1.send("py/tensors/w", values.tobytes())
            thread.join(30)
            self.assertNotIn("error", result)
            body, filters = result["value"]
            self.assertEqual(len(body), len(values) * 2)
            self.assertEqual(body, expected.tobytes())
            self.assertEqual(len(filters), 1)
            self.assertTrue(filters[0].startswith("n1/downcast@"), filters)
        finally:
            self.assertEqual(self.n1.detach_filter("py/tensors/**"), 1)
        self.assertEqual(self.n1.filters(), [])
        thread, result = self.start_receiver("py/tensors/w", lambda m: (m.read(), m.filters))
        self.n1.send("py/tensors/w", values.tobytes())
        thread.join(30)
        self.assertEqual(result["value"], (values.tobytes(), []))

        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.attach_filter("py/x/**", b"(module)", name="empty")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("ABI v1", caught.exception.details())

    def test_status_codes(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.send("py/nobody/home", b"x")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("no route to py/nobody/home", caught.exception.details())

        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.send("py/Bad/x", b"x")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("segment 2 'Bad'", caught.exception.details())

        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.resolve("py/**/x")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        # One data part over the 64 MiB limit.
        thread, _ = self.start_receiver("py/big-part", lambda m: m.read())
        big = 64 * MiB + 1

        def requests():
            yield pb.SendRequest(header=pb.SendHeader(destination="py/big-part", length=big))
            yield pb.SendRequest(data=bytes(big))

        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.stub.Send(requests())
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_watch_sees_endpoints_come_and_go(self):
        events = []
        synced = threading.Event()
        watch = self.n1.watch("py/watch/**")

        def run():
            try:
                for event in watch:
                    events.append((event.kind, event.endpoint.pattern))
                    if event.kind == pb.WatchResponse.KIND_SYNCED:
                        synced.set()
            except grpc.RpcError:
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.assertTrue(synced.wait(10))
        stream = self.n2.stub.Receive(pb.ReceiveRequest(pattern="py/watch/a"))
        next(stream)  # registered

        def seen(kind):
            deadline = time.time() + 10
            while time.time() < deadline:
                if (kind, "py/watch/a") in events:
                    return True
                time.sleep(0.05)
            return False

        self.assertTrue(seen(pb.WatchResponse.KIND_ADDED))
        stream.cancel()
        self.assertTrue(seen(pb.WatchResponse.KIND_REMOVED))
        watch.cancel()

    def test_slow_reader_slows_its_sender(self):
        size = 256 * MiB
        body = pattern(size, 3)
        gate = threading.Event()
        taken = []

        def slow(message):
            digest = hashlib.sha256()
            parts = {}
            for offset, data in message.chunks():
                if not taken:
                    taken.append(len(data))
                    gate.wait(120)
                parts[offset] = data
            for offset in sorted(parts):
                digest.update(parts[offset])
            return digest.hexdigest()

        thread, result = self.start_receiver("py/slow", slow)
        sent = {}
        sender = threading.Thread(target=lambda: sent.setdefault("reply", self.n1.send("py/slow", body)), daemon=True)
        sender.start()
        # Wait until n2 stops pushing (held by the reader's credit), then check the bound: a fixed sleep would let a
        # slow machine pass with no flow control at all.
        deadline = time.time() + 60
        while not taken and time.time() < deadline:
            time.sleep(0.01)
        self.assertTrue(taken, "the reader never got its first chunk")
        relayed, last, quiet_since, deadline = -1, -1, time.time(), time.time() + 60
        while time.time() < deadline:
            time.sleep(0.05)
            relayed = self.n2.status().bytes_out
            if relayed != last:
                last, quiet_since = relayed, time.time()
            elif time.time() - quiet_since >= 1.0:
                break
        else:
            self.fail(f"node n2 never stopped pushing to a reader that stopped ({relayed} bytes)")
        self.assertTrue(sender.is_alive(), "the sender finished although the receiver stopped reading")
        self.assertLess(relayed, 128 * MiB, f"node n2 pushed {relayed} bytes to a reader that stopped")
        gate.set()
        sender.join(60)
        thread.join(60)
        self.assertEqual(sent["reply"].bytes, size)
        self.assertEqual(result.get("value"), hashlib.sha256(body).hexdigest())

    def test_receiver_gone_mid_message_aborts_sender(self):
        def quit_early(message):
            for index, _ in enumerate(message.chunks()):
                if index == 2:
                    raise RuntimeError("receiver quits")

        thread, _ = self.start_receiver("py/quitter", quit_early)
        with self.assertRaises(grpc.RpcError) as caught:
            self.n1.send("py/quitter", pattern(128 * MiB, 4))
        self.assertIn(caught.exception.code(), (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE))
        self.assertIn("acknowledged", caught.exception.details())
        thread.join(10)

    def test_receive_loop_goes_on_after_a_failed_message(self):
        outcomes = []
        ready = threading.Event()

        def run():
            for message in self.n2.receive("py/goes-on", registered=lambda _: ready.set()):
                try:
                    outcomes.append(("received", len(message.read())))
                except MessageFailed as failed:
                    outcomes.append(("failed", failed.reason))
                if len(outcomes) == 2:
                    break

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.assertTrue(ready.wait(10))
        self.wait_for("py/goes-on")

        def gives_up():
            yield pb.SendRequest(header=pb.SendHeader(destination="py/goes-on", length=64 * MiB))
            for _ in range(4):
                yield pb.SendRequest(data=bytes(MiB))
            time.sleep(0.5)  # the receiver has the message open
            raise RuntimeError("the sending app gives up mid-body")

        with self.assertRaises(Exception):
            self.n1.stub.Send(gives_up())
        self.n1.send("py/goes-on", pattern(8 * MiB, 5))
        thread.join(30)
        self.assertEqual(len(outcomes), 2, outcomes)
        self.assertEqual(outcomes[0][0], "failed", outcomes)
        self.assertEqual(outcomes[1], ("received", 8 * MiB))


if __name__ == "__main__":
    unittest.main()
