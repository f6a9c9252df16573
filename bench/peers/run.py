#!/usr/bin/env python3
"""Freight against the systems people would pick instead, on loopback, in one run (bench/peers/run.sh installs
what it needs and calls this).

For each round, every system moves every message size once, in turn, so that drift of the machine spreads over
all of them (A/B alternation); medians and spreads over the rounds are reported. Per measurement: throughput, CPU
seconds per GiB of every process involved (servers, senders, receivers; start-up excluded), and the sum of those
processes' peak resident memory. Writes bench/results/peers.md, peers.json and peers.png, and rewrites the README's
comparison section between its markers.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PY = sys.executable
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
NATS_MAX_PAYLOAD = 64 * MiB  # nats-server's largest max_payload


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    try:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except psutil.Error:
        return 0.0


class Child:
    """A process whose stdout is JSON lines."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []

    def wait_for(self, key, timeout=120):
        import select

        deadline = time.time() + timeout
        while time.time() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, min(1.0, deadline - time.time())))
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.proc.args[:3]} exited: {self.proc.stderr.read()[-500:]}")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.lines.append(obj)
            if key in obj:
                return obj
        raise RuntimeError(f"timed out waiting for {key} from {self.proc.args[:3]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(total, start, done, cpu, memory):
    seconds = max(done - start, 1e-9)
    return {"mbps": total / seconds / 1e6, "cpu_s_per_gib": cpu / (total / GiB), "peak_bytes": memory,
            "seconds": seconds}


# ---- Systems -------------------------------------------------------------------------------------------------

def run_pair(prefix, size, count, port, server_pids=()):
    """Starts the receiver, waits until it is ready, starts the sender, waits for the last byte."""
    receiver = Child([PY, os.path.join(HERE, "peer.py"), f"{prefix}-recv", "--size", str(size), "--count",
                      str(count), "--port", str(port)])
    sender = None
    try:
        ready = receiver.wait_for("ready")
        servers_cpu0 = sum(cpu_seconds(pid) for pid in server_pids)
        sender = Child([PY, os.path.join(HERE, "peer.py"), f"{prefix}-send", "--size", str(size), "--count",
                        str(count), "--port", str(port)])
        started = sender.wait_for("start")
        # The receiver must see every message; a system that drops some (NATS core delivers at most once, and
        # drops a slow consumer's messages) never says done: give up some seconds after the sender finished.
        budget = 30 + size * count / (20 * MiB)
        deadline = time.time() + budget
        while sender.proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        try:
            done = receiver.wait_for("done", timeout=max(10, deadline - time.time()))
        except RuntimeError:
            return {"failed": "the receiver did not get every message"}
        sent = sender.wait_for("cpu", timeout=600)
        received = receiver.wait_for("cpu")
        sent_cpu = sent["cpu"] - started["cpu0"]
        received_cpu = received["cpu"] - ready["cpu0"]
        servers_cpu = sum(cpu_seconds(pid) for pid in server_pids) - servers_cpu0
        # Each end reports its own peak as it exits; servers are read while they run.
        memory = sent["peak"] + received["peak"] + sum(peak_rss(p) for p in server_pids)
        return measure(size * count, started["start"], done["done"], sent_cpu + received_cpu + servers_cpu, memory)
    finally:
        for child in (sender, receiver):
            if child:
                child.stop()


class Nats:
    name = "NATS"

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="freight-nats-")
        config = os.path.join(self.dir, "nats.conf")
        with open(config, "w") as f:
            f.write(f"listen: 127.0.0.1:{self.port}\nmax_payload: {NATS_MAX_PAYLOAD}\nmax_pending: 2GB\n")
        self.server = subprocess.Popen([shutil.which("nats-server"), "-c", config], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def cannot(self, size):
        return "over nats-server's 64 MB max_payload" if size > NATS_MAX_PAYLOAD else None

    def run(self, size, count):
        return run_pair("nats", size, count, self.port, [self.server.pid])

    def round_trips(self, size, count):
        """Request/reply, one round trip at a time: p50 and p99 in microseconds."""
        responder = Child([PY, os.path.join(HERE, "peer.py"), "nats-reply", "--size", str(size), "--count", "0",
                           "--port", str(self.port)])
        requester = None
        try:
            responder.wait_for("ready")
            requester = Child([PY, os.path.join(HERE, "peer.py"), "nats-request", "--size", str(size), "--count",
                               str(count), "--port", str(self.port)])
            result = requester.wait_for("p50_us", timeout=300)
            return {"p50_us": result["p50_us"], "p99_us": result["p99_us"]}
        finally:
            for child in (requester, responder):
                if child:
                    child.stop()

    def close(self):
        self.server.terminate()
        self.server.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class ZeroMQ:
    name = "ZeroMQ"

    def cannot(self, size):
        return None

    def run(self, size, count):
        return run_pair("zmq", size, count, free_port())

    def close(self):
        pass


class GRPC:
    name = "gRPC (grpcio)"

    def cannot(self, size):
        return None

    def run(self, size, count):
        return run_pair("grpc", size, count, free_port())

    def close(self):
        pass


class Iperf:
    """iperf3 over one TCP connection with Reno. As the ceiling it writes 1 MiB at a time (its largest write);
    `per_message` writes one message per write instead, which only differs below 1 MiB."""

    IPERF_WRITE_MAX = MiB

    def __init__(self, per_message=False):
        self.per_message = per_message
        self.name = "iperf3 (one write per message)" if per_message else "iperf3 (TCP ceiling)"
        self.port = free_port()
        self.server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def cannot(self, size):
        if self.per_message and size >= self.IPERF_WRITE_MAX:
            return "iperf3 writes at most 1 MiB at once: the ceiling's row"
        return None

    def run(self, size, count):
        write = min(size, self.IPERF_WRITE_MAX) if self.per_message else self.IPERF_WRITE_MAX
        total = max(size * count, write)
        cpu0 = cpu_seconds(self.server.pid)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(self.port), "-P", "1", "-l", str(write), "-C",
                              "reno", "-n", str(total), "-J"], capture_output=True, text=True, check=True)
        report = json.loads(out.stdout)
        received = report["end"]["sum_received"]
        seconds = received["seconds"]
        client_cpu = report["end"]["cpu_utilization_percent"]["host_total"] / 100 * seconds
        cpu = client_cpu + cpu_seconds(self.server.pid) - cpu0
        return {"mbps": received["bytes"] / seconds / 1e6, "cpu_s_per_gib": cpu / (received["bytes"] / GiB),
                "peak_bytes": peak_rss(self.server.pid), "seconds": seconds}

    def close(self):
        self.server.terminate()
        self.server.wait()


IN_FLIGHT_BYTES = 64 * MiB  # as `freight bench` keeps by default
SMALL_BODY_MAX = 64 * KiB  # a body up to this goes whole in a SMALL frame (Limits.smallBodyBytesMax)
EAGER_BYTES_APP = 4 * MiB  # what an app takes of small messages before their outcomes
EAGER_BYTES_NODE = 16 * MiB  # what a node takes of small messages from a peer before their outcomes
SMALL_HEADER_ALLOWANCE = 512


def small_in_flight(size, eager=EAGER_BYTES_APP):
    return min(1024, (eager // 2) // (size + SMALL_HEADER_ALLOWANCE))
WARM_UP_BYTES = 64 * MiB  # the warm-up round's measurement that sizes the counted ones
MAX_BYTES_PER_RUN = 16 * GiB
SMALL_WARM_UP = 20_000  # small messages in the warm-up round
ROUND_TRIPS = 5_000  # request/reply round trips per round and system


class Freight:
    """`freight bench`: both nodes and both apps in one process (its CPU and peak memory are all of them)."""

    def __init__(self, path, name):
        self.path = path
        self.name = name
        self.binary = os.path.join(ROOT, ".build", "release", "freight")

    def cannot(self, size):
        return None

    def run(self, size, count):
        # The sending app keeps IN_FLIGHT_BYTES of messages outstanding (1 to 64 messages), as an app chooses its
        # pipeline depth (docs/performance.md: 8 MiB app to app, 8 in flight against 2, median 5,824 against 5,023
        # MB/s in alternating rounds); small messages (up to 64 KiB) as many as half the receiver's eager budget
        # takes, at most 1024 (`freight bench`'s own default, Limits.inFlightDefault): a receiving app's, and node to
        # node a node's.
        eager = EAGER_BYTES_NODE if self.path == "node" else EAGER_BYTES_APP
        in_flight = (small_in_flight(size, eager) if size <= SMALL_BODY_MAX
                     else max(1, min(64, IN_FLIGHT_BYTES // size)))
        out = subprocess.run([self.binary, "bench", "--paths", self.path, "--sizes", str(size), "--total",
                              str(size * count), "--in-flight", str(in_flight), "--json"],
                             capture_output=True, text=True, check=True)
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        wanted = "shm" if self.path == "local" else self.path
        row = [r for r in rows if r["path"] == wanted][-1]
        return {"mbps": row["mbps"], "cpu_s_per_gib": row["cpu_s_per_gib"], "peak_bytes": row["peak_rss_bytes"],
                "seconds": row["seconds"]}

    def round_trips(self, size, count):
        """`freight bench --paths request`: request/reply between two apps through two nodes, one at a time."""
        out = subprocess.run([self.binary, "bench", "--paths", "request", "--sizes", str(size), "--total",
                              str(size * count), "--json"], capture_output=True, text=True, check=True)
        row = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]
        return {"p50_us": row["p50_us"], "p99_us": row["p99_us"]}

    def close(self):
        pass


# ---- The run -------------------------------------------------------------------------------------------------

def fmt_size(n):
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def percent_of_goal(ratio, goal):
    """A ratio as a whole percentage, or to a tenth where the whole one would read as the goal it misses."""
    if ratio < goal and round(ratio * 100) >= round(goal * 100):
        return f"{ratio * 100:.1f}%"
    return f"{ratio * 100:.0f}%"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="65536,1048576,8388608,67108864,1073741824")
    parser.add_argument("--seconds-per-run", type=float, default=1.0,
                        help="how long each measurement should last, at the rate the system showed in a warm-up round")
    parser.add_argument("--bytes-per-run", type=int, default=None,
                        help="a fixed amount per measurement instead of --seconds-per-run (at least one message)")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    parser.add_argument("--grpc-only", action="store_true",
                        help="only the gRPC API's client streaming against grpcio's, alternating, at 8 MiB and up "
                             "of --sizes; prints a table and writes nothing")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.grpc_only:
        return grpc_only(args, [s for s in sizes if s >= 8 * MiB])

    iperf, iperf_per_message = Iperf(), Iperf(per_message=True)
    node, app = Freight("node", "Freight node to node"), Freight("app", "Freight app to app (2 nodes)")
    local = Freight("local", "Freight app to app (1 node, shared memory)")
    nats = Nats()
    grpcio = GRPC()
    peers = [nats, ZeroMQ(), grpcio]
    # The gRPC API both ways (a gRPC app to a gRPC app: two gRPC legs and the fabric), and its client streaming
    # alone (a gRPC app to a native app), which is what grpcio's row measures.
    grpc_api = Freight("grpc", "Freight gRPC API (2 nodes)")
    grpc_send = Freight("grpc-send", "Freight gRPC API, gRPC app to native app (2 nodes)")
    systems = [iperf, iperf_per_message, node, app, grpc_api, grpc_send] + peers + [local]
    results = {}  # (system, size) -> [runs]
    skipped = {}
    # Each measurement lasts about --seconds-per-run at the rate the system showed in a warm-up round that is not
    # counted (WARM_UP_BYTES, at least one message): a fixed amount would be 40 ms for the fastest systems, which
    # start-up and scheduling noise dominate, and minutes for the slowest.
    rates = {}  # (system, size) -> bytes per second in the warm-up round

    def count_for(system, size, fixed_count):
        if args.bytes_per_run is not None:
            return max(1, args.bytes_per_run // size)
        rate = rates.get((system.name, size))
        if rate is None:
            return fixed_count
        return max(1, min(MAX_BYTES_PER_RUN // size, round(rate * args.seconds_per_run / size)))

    def attempt(system, size, count):
        try:
            return system.run(size, count)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            return {"failed": f"error: {str(error)[-200:]}"}

    try:
        warm_up = args.bytes_per_run is None
        for round_ in range(-1 if warm_up else 0, args.rounds):
            for size in sizes:
                for system in systems:
                    reason = system.cannot(size)
                    if reason:
                        skipped[(system.name, size)] = reason
                        continue
                    if round_ < 0:
                        run = attempt(system, size, max(1, WARM_UP_BYTES // size))
                        if "failed" not in run:
                            rates[(system.name, size)] = run["mbps"] * 1e6
                        continue
                    run = attempt(system, size, count_for(system, size, max(1, WARM_UP_BYTES // size)))
                    results.setdefault((system.name, size), []).append(run)
            print(f"round {round_ + 1} of {args.rounds} done" if round_ >= 0 else "warm-up round done",
                  file=sys.stderr, flush=True)

        # Small messages: messages per second, Freight against NATS, sized the same way.
        small = {}
        for round_ in range(-1 if warm_up else 0, args.rounds):
            for size in (256, 4096):
                for system in (app, nats):
                    run = attempt(system, size, SMALL_WARM_UP if round_ < 0 else count_for(
                        system, size, SMALL_WARM_UP))
                    if "failed" in run:
                        continue
                    if round_ < 0:
                        rates[(system.name, size)] = run["mbps"] * 1e6
                    else:
                        small.setdefault((system.name, size), []).append(run["mbps"] * 1e6 / size)
        # Request and reply, 256 B, one round trip at a time: p50 and p99 per round.
        round_trips = {}
        for round_ in range(args.rounds):
            for system in (app, nats):
                try:
                    round_trips.setdefault(system.name, []).append(system.round_trips(256, ROUND_TRIPS))
                except Exception as error:  # a failed run is reported, not fatal
                    print(f"{system.name} request/reply: {error}", file=sys.stderr)
    finally:
        for system in systems:
            system.close()

    names = [s.name for s in systems]
    if args.bytes_per_run is not None:
        amount = f"{fmt_size(args.bytes_per_run)} per measurement, at least one message"
    else:
        amount = (f"each measurement sized to last about {args.seconds_per_run:g} s at the rate the system showed "
                  f"in a warm-up round of {fmt_size(WARM_UP_BYTES)}, at least one message")
    lines = [f"Machine: {platform.machine()}, {psutil.cpu_count()} cores, "
             f"{psutil.virtual_memory().total / GiB:.0f} GiB, Linux {platform.release()}. "
             f"Command: `bench/peers/run.sh` ({args.rounds} rounds, alternating systems; "
             f"{amount}; Freight's sending app keeps "
             f"{fmt_size(IN_FLIGHT_BYTES)} of messages in flight, 1 to 64, and small ones (256 B, 4 KiB, 64 KiB) "
             f"{small_in_flight(256)}, {small_in_flight(4096)} and {small_in_flight(64 * KiB)} (node to node, within a node's "
             f"budget: {small_in_flight(64 * KiB, EAGER_BYTES_NODE)} at 64 KiB), sent in batches of 64 (`freight bench`'s "
             f"default: each message still confirmed on its own); iperf3's ceiling writes 1 MiB at a time, its "
             f"largest write).", "",
             "| system | message | MB/s (median) | spread (min–max) | CPU s/GiB | peak memory |",
             "|---|---|---|---|---|---|"]
    table = {}
    for size in sizes:
        for name in names:
            if (name, size) in skipped:
                if name == iperf_per_message.name:
                    continue  # the same measurement as the ceiling's row
                lines.append(f"| {name} | {fmt_size(size)} | n/a | {skipped[(name, size)]} | | |")
                continue
            failed = [r for r in results[(name, size)] if "failed" in r]
            runs = [r for r in results[(name, size)] if "failed" not in r]
            if not runs:
                lines.append(f"| {name} | {fmt_size(size)} | failed | {failed[0]['failed']} in every run | | |")
                continue
            note = f" ({len(failed)} of {len(failed) + len(runs)} runs lost messages)" if failed else ""
            mbps = statistics.median(r["mbps"] for r in runs)
            table[(name, size)] = mbps
            lines.append(
                f"| {name} | {fmt_size(size)} | {mbps:.0f}{note} | {min(r['mbps'] for r in runs):.0f}–"
                f"{max(r['mbps'] for r in runs):.0f} | {statistics.median(r['cpu_s_per_gib'] for r in runs):.2f} | "
                f"{statistics.median(r['peak_bytes'] for r in runs) / MiB:.0f} MiB |")
    lines += ["", "Small messages (one subject/address, one receiver), messages per second, median:", "",
              "| system | 256 B | 4 KiB |", "|---|---|---|"]
    def median_or_failed(key):
        return f"{statistics.median(small[key]):,.0f}" if small.get(key) else "lost messages"

    for name in (app.name, nats.name):
        lines.append(f"| {name} | {median_or_failed((name, 256))} | {median_or_failed((name, 4096))} |")
    lines += ["", f"Request and reply, 256 B, one round trip at a time ({ROUND_TRIPS:,} per round; Freight through two "
              "nodes, NATS through its server), microseconds, median over rounds:", "",
              "| system | p50 | p99 |", "|---|---|---|"]
    for name in (app.name, nats.name):
        runs = round_trips.get(name, [])
        if runs:
            lines.append(f"| {name} | {statistics.median(r['p50_us'] for r in runs):,.0f} | "
                         f"{statistics.median(r['p99_us'] for r in runs):,.0f} |")
        else:
            lines.append(f"| {name} | failed | |")

    # Goals, each a ratio from this run: of the medians, and beside it the range of the ratios within each round (the
    # two systems measured minutes apart at most), which shows how much of a shortfall is this machine's drift.
    def per_round(a, b, size):
        pairs = zip(results.get((a, size), []), results.get((b, size), []))
        return [x["mbps"] / y["mbps"] for x, y in pairs if "failed" not in x and "failed" not in y and y["mbps"] > 0]

    def percent_per_round(a, b, size):
        rounds = per_round(a, b, size)
        return f"; {min(rounds) * 100:.0f}–{max(rounds) * 100:.0f}% within each round" if rounds else ""

    goals = []
    peer_names = [p.name for p in peers]
    for freight_app in (app.name, local.name):
        for size in sizes:
            if size < 8 * MiB:
                continue
            best = max((table[(p, size)], p) for p in peer_names if (p, size) in table)
            ratio = table[(freight_app, size)] / best[0]
            line = (f"- {fmt_size(size)}: {freight_app} {ratio:,.1f}× the best peer ({best[1]}); goal 2× "
                    f"{'met' if ratio >= 2 else 'NOT met'}")
            rounds = per_round(freight_app, best[1], size)
            if rounds:
                line += f"; {min(rounds):,.1f}–{max(rounds):,.1f}× within each round"
            if ratio < 2 and (iperf.name, size) in table:
                # What the goal asks, against what one bare TCP stream carries in the same run.
                line += (f" (2× {best[1]} is {2 * best[0] / table[(iperf.name, size)] * 100:.0f}% of iperf3's "
                         f"TCP ceiling here)")
            goals.append(line)
    for size in sizes:
        ratio = table[(node.name, size)] / table[(iperf.name, size)]
        line = (f"- {fmt_size(size)}: Freight node to node at {percent_of_goal(ratio, 0.8)} of iperf3's ceiling; "
                f"goal 80% "
                f"{'met' if ratio >= 0.8 else 'NOT met'}")
        line += percent_per_round(node.name, iperf.name, size)
        if (iperf_per_message.name, size) in table:
            like = table[(node.name, size)] / table[(iperf_per_message.name, size)]
            line += f" ({like * 100:.0f}% of iperf3 writing one {fmt_size(size)} message at a time"
            if ratio < 0.8:
                # The CPU the goal leaves: every core busy at 80% of the ceiling, against what iperf3 itself spends
                # writing one message at a time (CPU s/GiB of all processes, medians of this run).
                allowed = psutil.cpu_count() / (0.8 * table[(iperf.name, size)] * 1e6 / GiB)
                spent = statistics.median(r["cpu_s_per_gib"] for r in results[(iperf_per_message.name, size)]
                                          if "failed" not in r)
                line += (f"; 80% of the ceiling leaves at most {allowed:.2f} CPU-s/GiB on {psutil.cpu_count()} "
                         f"cores, and that stream alone spends {spent:.2f}")
            line += ")"
        goals.append(line)
    for size in sizes:
        if size < 8 * MiB or (grpcio.name, size) not in table or (grpc_send.name, size) not in table:
            continue
        ratio = table[(grpc_send.name, size)] / table[(grpcio.name, size)]
        line = (f"- {fmt_size(size)}: the gRPC API's client streaming (gRPC app to native app) at "
                f"{percent_of_goal(ratio, 1.0)} "
                f"of grpcio's; goal 100% {'met' if ratio >= 1 else 'NOT met'}")
        line += percent_per_round(grpc_send.name, grpcio.name, size)
        goals.append(line)
    lines += ["", "Goals:", ""] + goals
    text = "\n".join(lines) + "\n"

    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "peers.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump({"results": {f"{n}|{s}": r for (n, s), r in results.items()},
                   "small": {f"{n}|{s}": r for (n, s), r in small.items()},
                   "round_trips": round_trips,
                   "skipped": {f"{n}|{s}": r for (n, s), r in skipped.items()}}, f, indent=1)
    chart(names, sizes, table, os.path.join(out_dir, "peers.png"))
    readme(args.readme, text)
    print(text)


def grpc_only(args, sizes):
    """A gRPC app sending to a native app through two nodes (`freight bench --paths grpc-send`) against grpcio's
    client streaming, one message per call, alternating in each round, each measurement about 1 GiB."""
    systems = [Freight("grpc-send", "Freight gRPC API, gRPC app to native app (2 nodes)"), GRPC()]
    runs = {}
    for round_ in range(args.rounds):
        for size in sizes:
            for system in systems:
                count = max(1, GiB // size)
                runs.setdefault((system.name, size), []).append(system.run(size, count))
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"`bench/peers/run.sh --grpc-only` ({args.rounds} rounds, alternating; Freight keeps "
          f"{fmt_size(IN_FLIGHT_BYTES)} of messages in flight, 1 to 64; grpcio one call per message, in turn)\n")
    print("| system | message | MB/s (median) | spread (min–max) | CPU s/GiB |\n|---|---|---|---|---|")
    for size in sizes:
        for system in systems:
            rows = [r for r in runs[(system.name, size)] if "failed" not in r]
            if not rows:
                print(f"| {system.name} | {fmt_size(size)} | failed | | |")
                continue
            print(f"| {system.name} | {fmt_size(size)} | {statistics.median(r['mbps'] for r in rows):.0f} | "
                  f"{min(r['mbps'] for r in rows):.0f}–{max(r['mbps'] for r in rows):.0f} | "
                  f"{statistics.median(r['cpu_s_per_gib'] for r in rows):.2f} |")
    for system in systems:
        system.close()


def chart(names, sizes, table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [table.get((name, size), 0) for size in sizes]
        ax.bar([x + i * width for x in range(len(sizes))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(sizes))])
    ax.set_xticklabels([fmt_size(s) for s in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (median, log scale)")
    ax.set_xlabel("message size")
    ax.set_title("One message stream on loopback: Freight and the systems people pick instead")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def readme(path, text):
    begin, end = "<!-- peers:begin -->", "<!-- peers:end -->"
    with open(path) as f:
        content = f.read()
    if begin not in content or end not in content:
        return
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = f"{begin}\n<!-- generated by bench/peers/run.sh from bench/results/peers.md; do not edit -->\n\n{text}\n" \
           f"![throughput by message size](bench/results/peers.png)\n{end}"
    with open(path, "w") as f:
        f.write(head + body + tail)


if __name__ == "__main__":
    main()
