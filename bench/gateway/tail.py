#!/usr/bin/env python3
"""Reads what tail.sh recorded and prints where slow requests lost their time.

Each wrk request is matched on its connection: wrk's write → the proxy's read of that client
socket → the proxy's next send on it → wrk's read. A request's latency splits into
  read-wait  wrk's write until the proxy reads the request (the proxy noticing it),
  in-proxy   the proxy's read until its response send (the upstream round trip included),
  to-wrk     that send until wrk reads it (wrk's own scheduling).
Then the stalls: every moment the proxy or wrk made no syscall for more than 0.8 ms, with the
context switches on both cores during it (who ran instead, and whether the process slept (S) or
was preempted (R)).

usage: tail.py DIR PROXY_PORT PROXY_PID WRK_PID
"""
import bisect
import re
import sys

BACKEND_WINDOW = 0.05  # seconds cut at both ends: the two recordings start a moment apart
STALL = 0.0008


def socket_ports(out):
    ports = {}
    with open(f"{out}/tcp.txt") as table:
        next(table)
        for line in table:
            f = line.split()
            ports[f[9]] = (int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16))
    return ports


def fd_ports(out, pid, ports):
    result = {}
    with open(f"{out}/fds.{pid}") as fds:
        for line in fds:
            fd, inode = line.split()
            if inode in ports:
                result[int(fd)] = ports[inode]
    return result


def calls(path, recv, send):
    """fd → sorted (time, 'r'|'s'): reads that returned data, and sends."""
    events, pending, every = {}, {}, []
    with open(path) as lines:
        for line in lines:
            parts = line.split()
            if len(parts) < 3:
                continue
            tid, at, name = parts[0], float(parts[1].rstrip(":")), parts[2].rstrip(":")
            every.append(at)
            if name.endswith("sys_enter_" + recv):
                pending[tid] = int(re.search(r"fd: (0x[0-9a-f]+)", line).group(1), 16)
            elif name.endswith("sys_exit_" + recv):
                fd, ret = pending.pop(tid, None), int(parts[3], 16)
                if fd is not None and 0 < ret < 1 << 40:
                    events.setdefault(fd, []).append((at, "r"))
            elif name.endswith("sys_enter_" + send):
                fd = int(re.search(r"fd: (0x[0-9a-f]+)", line).group(1), 16)
                events.setdefault(fd, []).append((at, "s"))
    return events, sorted(every)


def main():
    out, port, proxy_pid, wrk_pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ports = socket_ports(out)
    proxy_fds = fd_ports(out, proxy_pid, ports)
    wrk_fds = fd_ports(out, wrk_pid, ports)
    client_fd_by_peer = {p[1]: fd for fd, p in proxy_fds.items() if p[0] == port}
    proxy, proxy_all = calls(f"{out}/proxy.txt", "recvfrom", "sendto")
    wrk, wrk_all = calls(f"{out}/wrk-calls.txt", "read", "write")
    if not proxy_all or not wrk_all:
        sys.exit("tail.py: nothing recorded (is the PID the proxy's, and perf allowed to trace?)")
    lo = max(proxy_all[0], wrk_all[0]) + BACKEND_WINDOW
    hi = min(proxy_all[-1], wrk_all[-1]) - BACKEND_WINDOW

    rows = []
    for wfd, (local, remote) in wrk_fds.items():
        cfd = client_fd_by_peer.get(local)
        if remote != port or cfd is None or cfd not in proxy:
            continue
        reads = [t for t, k in proxy[cfd] if k == "r"]
        sends = [t for t, k in proxy[cfd] if k == "s"]
        writes = [t for t, k in wrk.get(wfd, []) if k == "s"]
        answers = [t for t, k in wrk.get(wfd, []) if k == "r"]
        for sent in writes:
            if not lo < sent < hi:
                continue
            i = bisect.bisect_left(reads, sent - 2e-6)
            if i == len(reads):
                break
            j = bisect.bisect_left(sends, reads[i])
            if j == len(sends):
                break
            k = bisect.bisect_left(answers, sends[j] - 2e-6)
            if k == len(answers):
                break
            rows.append((answers[k] - sent, reads[i] - sent, sends[j] - reads[i],
                         answers[k] - sends[j]))
    if not rows:
        sys.exit("tail.py: no request matched (wrong port?)")
    rows.sort()
    n = len(rows)

    def pct(col, p):
        values = sorted(r[col] for r in rows)
        return values[min(n - 1, int(n * p / 100))] * 1000

    print(f"{n} requests matched in {hi - lo:.2f} s; milliseconds:")
    for name, col in (("latency", 0), ("read-wait", 1), ("in-proxy", 2), ("to-wrk", 3)):
        print(f"  {name:10s} " + " ".join(f"p{p}={pct(col, p):.2f}" for p in (50, 90, 99, 99.5, 99.9)))
    for a, b in ((0, 90), (90, 98), (98, 99), (99, 99.5), (99.5, 100)):
        part = rows[int(n * a / 100):int(n * b / 100)] or rows[-1:]
        mean = [sum(r[c] for r in part) / len(part) * 1000 for c in range(4)]
        print(f"  p{a}-p{b}: {mean[0]:.2f} = read-wait {mean[1]:.2f} + in-proxy {mean[2]:.2f}"
              f" + to-wrk {mean[3]:.2f}")

    switches = []
    with open(f"{out}/switch.txt") as lines:
        for line in lines:
            m = re.match(r"\[(\d+)\]\s+([\d.]+): prev_comm=(.*?) prev_pid=\d+ prev_prio=\d+ "
                         r"prev_state=(\S+) ==> next_comm=(.*?) next_pid=\d+", line)
            if m:
                switches.append((float(m.group(2)), int(m.group(1)), m.group(3), m.group(4),
                                 m.group(5)))
    switches.sort()
    at = [s[0] for s in switches]
    for who, times in (("proxy", proxy_all), ("wrk", wrk_all)):
        stalls = [(a, b - a) for a, b in zip(times, times[1:]) if b - a > STALL and lo < a < hi]
        total = sum(d for _, d in stalls) * 1000
        print(f"{who}: {len(stalls)} stalls > {STALL * 1000:.1f} ms, {total:.1f} ms in all")
        for start, length in stalls:
            i = bisect.bisect_left(at, start - 0.0002)
            j = bisect.bisect_left(at, start + length + 0.0002)
            seen = [f"cpu{c} {prev}({state})→{nxt} @{(t - start) * 1000:.2f}"
                    for t, c, prev, state, nxt in switches[i:j]]
            print(f"  {(start - lo) * 1000:8.1f} ms +{length * 1000:.2f}: " + "; ".join(seen[:6]))


if __name__ == "__main__":
    main()
