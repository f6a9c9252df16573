#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace receiver: prints every span it is sent as one JSON line (trace and span ids in hex,
the parent, name, kind, status, attributes and the resource's service.name), for tests and for looking at Freight's
traces without a Jaeger or a Collector.

    scripts/otlp-receiver.py --listen 127.0.0.1:4317 [--out spans.jsonl]

It prints {"event": "listening", "port": N} first (port 0 picks one). Needs grpcio and opentelemetry-proto.
"""
import argparse
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "service": resource.get("service.name"),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "status": span.status.code,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                    }
                    self.out.write(json.dumps(line) + "\n")
                    self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:4317")
    parser.add_argument("--out", help="write spans here instead of stdout")
    args = parser.parse_args()
    out = open(args.out, "a") if args.out else sys.stdout
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[
        ("grpc.max_receive_message_length", 16 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    port = server.add_insecure_port(args.listen)
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
