"""Embedding wasm-gdbstub: a Python program running many Stores, any of which a
debugger can attach to while the others keep running.

    .venv/bin/python examples/embed_host.py [--listen 127.0.0.1:1234] [--tenants 3] [--seconds N]

Each "tenant" thread handles jobs one after another, every job in a fresh Store
of examples/build/bench_loop.O0.wasm (``call_loop(n)``, which calls ``tick`` n
times; every fifth job is a long one).  ``DebugHost.run`` makes each job's Store a
process debuggers see for as long as the job runs:

    gdb -ex 'target extended-remote 127.0.0.1:1234' -ex 'info os processes'
    (gdb) attach PID            # a long job's Store: stopped where it is
    (gdb) break tick            # patched into this Store's code only
    (gdb) continue
    (gdb) detach                # its code restored, it runs on

or, for the next job to start: ``monitor hold-new-stores on``, then attach the
Store ``info os processes`` lists as held.  Once a second the program prints
how many jobs each tenant finished: the others keep counting while one Store
sits at a breakpoint.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import codemem
import gdbstub

MODULE = Path(__file__).resolve().parent / "build" / "bench_loop.O0.wasm"
SHORT_JOB, LONG_JOB = 50_000, 300_000_000


def tenant(host: gdbstub.DebugHost, module: codemem.Module, done: list[int], index: int,
           stop: threading.Event) -> None:
    jobs = 0
    while not stop.is_set():
        store = codemem.Store(module.engine)
        try:
            instance = codemem.Instance(store, module, [])
            n = LONG_JOB if jobs % 5 == 4 else SHORT_JOB
            try:
                host.run(instance.exports["call_loop"], n)
            except codemem.Trap as trap:  # a debugger's `kill`, say: this job ends, the tenant goes on
                print(f"tenant {index}: job in Store {store.id} ended: {trap.message}", flush=True)
        finally:
            store.close()
        jobs += 1
        done[index] = jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:1234", metavar="HOST:PORT")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    args = parser.parse_args(argv)

    engine = codemem.Engine(debug=True)
    module = codemem.Module.from_file(engine, MODULE)
    host = gdbstub.DebugHost(engine, listen=args.listen)
    address, port = host.start()
    print(f"listening on {address}:{port}; attach with: gdb -ex 'target extended-remote {address}:{port}' "
          f"-ex 'info os processes'", flush=True)

    stop = threading.Event()
    done = [0] * args.tenants
    threads = [threading.Thread(target=tenant, args=(host, module, done, i, stop), daemon=True)
               for i in range(args.tenants)]
    for thread in threads:
        thread.start()
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            print("jobs done per tenant: " + ", ".join(map(str, done)), flush=True)
    except KeyboardInterrupt:
        pass
    stop.set()
    host.close()      # debuggers are detached; their Stores run on
    host.kill_all()   # end the long jobs still running
    for thread in threads:
        thread.join(10)
    print(f"{sum(done)} jobs done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
