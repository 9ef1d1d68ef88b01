"""Interleaved A2A latency: SendMessage to each target in turn, call by call, so that the agent's
own drift falls on every target alike.

usage: a2a_interleaved.py COUNT WARMUP NAME=URL=TOKEN...
Each target is one keep-alive HTTP client (httpx) posting the JSON-RPC request an SDK client
sends (A2A-Version 1.0, Authorization: Bearer TOKEN). Prints, per target, the median and p99 in
µs and the errors, then the median of the per-call differences against the first target.
"""
import json
import statistics
import sys
import time
import uuid

import httpx


def main() -> None:
    count, warmup = int(sys.argv[1]), int(sys.argv[2])
    targets = []
    for spec in sys.argv[3:]:
        name, url, token = spec.split("=", 2)
        client = httpx.Client(headers={"Authorization": f"Bearer {token}", "A2A-Version": "1.0"})
        targets.append((name, url, client))
    samples = {name: [] for name, _, _ in targets}
    errors = {name: 0 for name, _, _ in targets}
    for i in range(warmup + count):
        for name, url, client in targets:
            body = {
                "jsonrpc": "2.0",
                "id": str(uuid.uuid4()),
                "method": "SendMessage",
                "params": {"message": {
                    "messageId": str(uuid.uuid4()), "role": "ROLE_USER",
                    "parts": [{"text": "quick"}], "metadata": {"skill": "summarize"}}},
            }
            t0 = time.perf_counter_ns()
            r = client.post(url, json=body)
            elapsed = (time.perf_counter_ns() - t0) // 1000
            ok = r.status_code == 200 and "result" in r.json()
            if not ok:
                errors[name] += 1
            if i >= warmup:
                samples[name].append(elapsed)
    base = targets[0][0]
    print(f"{'target':<10} {'median_us':>10} {'p99_us':>8} {'errors':>7} {'added_median_us':>16}")
    for name, _, _ in targets:
        s = sorted(samples[name])
        med, p99 = s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]
        diffs = [a - b for a, b in zip(samples[name], samples[base])]
        added = "-" if name == base else str(int(statistics.median(diffs)))
        print(f"{name:<10} {med:>10} {p99:>8} {errors[name]:>7} {added:>16}")


if __name__ == "__main__":
    main()
