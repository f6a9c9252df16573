#!/usr/bin/env python3
"""A small command line over freight_client, used by Freight's tests and handy by hand:

    python freight_py.py send  --target 127.0.0.1:7300 ADDRESS FILE
    python freight_py.py recv  --target 127.0.0.1:7300 ADDRESS --out FILE
    python freight_py.py resolve --target 127.0.0.1:7300 PATTERN
    python freight_py.py attach-filter --target 127.0.0.1:7300 PATTERN MODULE.wasm [--config CONFIG]
    python freight_py.py detach-filter --target 127.0.0.1:7300 PATTERN

Prints one JSON object per line; digests are SHA-256 of the body.
"""

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from freight_client import Client  # noqa: E402


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["send", "recv", "resolve", "attach-filter", "detach-filter"])
    parser.add_argument("--target", required=True)
    parser.add_argument("address")
    parser.add_argument("file", nargs="?")
    parser.add_argument("--out")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--config", default="")
    args = parser.parse_args()
    # The secret of an access-list token, from the environment (never the command line, where others can read it).
    client = Client(args.target, token=os.environ.get("FREIGHT_TOKEN") or None)
    try:
        if args.command == "send":
            reply = client.send(args.address, args.file)
            print(json.dumps({"event": "sent", "bytes": reply.bytes, "seconds": reply.seconds,
                              "deliveries": len(reply.deliveries), "sha256": sha256_file(args.file)}), flush=True)
        elif args.command == "recv":
            received = 0

            def ready(registered):
                print(json.dumps({"event": "ready", "endpoint": registered.endpoint_id, "node": registered.node}),
                      flush=True)

            for message in client.receive(args.address, registered=ready):
                path = args.out if args.count == 1 else f"{args.out}.{received}"
                size = message.write_to(path)
                print(json.dumps({"event": "received", "bytes": size, "source": message.source,
                                  "path": message.path, "sha256": sha256_file(path)}), flush=True)
                received += 1
                if received >= args.count:
                    break
        elif args.command == "attach-filter":
            for attached in client.attach_filter(args.address, args.file, config=args.config):
                print(json.dumps({"pattern": attached.pattern, "name": attached.name, "sha256": attached.sha256,
                                  "config": attached.config, "resumable": attached.resumable}), flush=True)
        elif args.command == "detach-filter":
            print(json.dumps({"detached": client.detach_filter(args.address)}), flush=True)
        else:
            endpoints, truncated = client.resolve(args.address)
            for endpoint in endpoints:
                print(json.dumps({"node": endpoint.node, "id": endpoint.id, "pattern": endpoint.pattern}))
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
