"""The kernel's floor for a fan-out: CPU per small send to N loopback TCP sockets, by send method.

    .venv/bin/python bench/send_floor.py --sockets 2000 --modes native,send,uvloop
    .venv/bin/python bench/send_floor.py --sockets 2000 --modes native --congestion reno
    pip install liburing==2026.3.30 && .venv/bin/python bench/send_floor.py --modes native,uring

One process holds N accepted sockets; a second process holds the other ends and reads everything
with epoll. Every --gap seconds the first sends one 102-byte WebSocket frame to every socket, and
its user and system CPU for that loop are read with getrusage. Modes:

- ``native``: Clarion's fan-out loop (clarion._fanout), one send(2) per socket from C;
- ``send``: a Python loop of socket.send (what asyncio's own transports do per write);
- ``uvloop``: a Python loop of uvloop transport.write (write(2) through libuv);
- ``uring``: io_uring, one submission of N sends (needs the liburing package; not a dependency).

Nothing else runs in the sending process, so the figures are the floor under any server's fan-out.
Not part of the installed package.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import time
from typing import Any, cast

FRAME = bytes((0x81, 100)) + b"x" * 100


class _Target:
    __slots__ = ("out_fd",)

    def __init__(self, fd: int) -> None:
        self.out_fd = fd


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reader(port: int, count: int, ready: Any) -> None:
    _raise_nofile()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    ready.set()
    while True:
        for fd, _ in poller.poll(1.0, 4096):
            try:
                if not by_fd[fd].recv(65536):
                    return
            except BlockingIOError:
                pass


def _sender(mode: str, conns: list[socket.socket], cleanups: list[Any]) -> Any:
    if mode == "send":
        return lambda: [conn.send(FRAME) for conn in conns]
    if mode == "native":
        from clarion._fanout import fanout

        targets = {str(n): _Target(conn.fileno()) for n, conn in enumerate(conns)}

        def native() -> None:
            sent, rest = fanout(targets, FRAME, None)
            assert sent == len(conns) and not rest, (sent, rest)

        return native
    if mode == "uvloop":
        import asyncio

        import uvloop

        loop = uvloop.new_event_loop()
        transports: list[asyncio.Transport] = []

        async def adopt() -> None:
            for conn in conns:
                adopted, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=conn)
                # uvloop's stub names the transport a BaseProtocol; it is a stream transport.
                transport = cast(asyncio.Transport, adopted)
                transport.set_write_buffer_limits(high=0)  # write now, as Clarion's connections do
                transports.append(transport)

        loop.run_until_complete(adopt())
        writes = [transport.write for transport in transports]

        def close() -> None:
            for transport in transports:
                transport.abort()
            loop.run_until_complete(asyncio.sleep(0.1))
            loop.close()

        cleanups.append(close)
        return lambda: [write(FRAME) for write in writes]
    if mode == "uring":
        import liburing

        ring = liburing.Ring()
        liburing.io_uring_queue_init(max(64, 1 << (len(conns) - 1).bit_length()), ring)
        cleanups.append(lambda: liburing.io_uring_queue_exit(ring))
        fds = [conn.fileno() for conn in conns]

        def uring() -> None:
            for fd in fds:
                sqe = liburing.io_uring_get_sqe(ring)
                liburing.io_uring_prep_send(sqe, fd, FRAME)
                sqe.flags = liburing.IOSQE_CQE_SKIP_SUCCESS  # a completion only for a failed send
            liburing.io_uring_submit(ring)
            failed = liburing.io_uring_cq_ready(ring)
            assert failed == 0, failed

        return uring
    raise SystemExit(f"unknown mode {mode!r}")


def measure(mode: str, count: int, rounds: int, gap: float, congestion: str | None) -> dict[str, float]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    spawn = mp.get_context("spawn")  # a fresh process: no descriptors inherited from earlier modes
    ready = spawn.Event()
    reader = spawn.Process(target=_reader, args=(listener.getsockname()[1], count, ready), daemon=True)
    reader.start()
    conns = []
    for _ in range(count):
        conn, _ = listener.accept()
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if congestion:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        conns.append(conn)
    ready.wait()
    cleanups: list[Any] = []
    send_all = _sender(mode, conns, cleanups)
    user, system, walls = [], [], []
    try:
        for _ in range(rounds):
            time.sleep(gap)
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            send_all()
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            user.append(after.ru_utime - before.ru_utime)
            system.append(after.ru_stime - before.ru_stime)
            walls.append(wall)
    finally:
        for cleanup in cleanups:
            cleanup()
        for conn in conns:
            conn.close()
        reader.join(5)
        listener.close()
    per = 1e6 / count
    return {
        "user_us": statistics.fmean(user) * per,
        "sys_us": statistics.fmean(system) * per,
        "total_us": (statistics.fmean(user) + statistics.fmean(system)) * per,
        "wall_ms_p50": statistics.median(walls) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between fan-outs (0.05 = 20 events/s)")
    parser.add_argument("--modes", default="native,send,uvloop")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the modes, alternating")
    parser.add_argument("--congestion", help="TCP congestion control for the sending sockets (e.g. reno, bbr)")
    args = parser.parse_args()
    _raise_nofile()
    print(f"{args.sockets} sockets, {args.rounds} fan-outs {args.gap:g} s apart; CPU per send (µs), pid {os.getpid()}")
    print(f"{'mode':8} {'user':>6} {'sys':>6} {'total':>6} {'wall p50 ms':>12}")
    for _ in range(args.repeat):
        for mode in args.modes.split(","):
            row = measure(mode, args.sockets, args.rounds, args.gap, args.congestion)
            cpu = f"{row['user_us']:6.2f} {row['sys_us']:6.2f} {row['total_us']:6.2f}"
            print(f"{mode:8} {cpu} {row['wall_ms_p50']:12.1f}", flush=True)


if __name__ == "__main__":
    main()
