"""``wasm-gdbstub``: serve a Store to gdb/lldb, run a module, inspect its code.

    wasm-gdbstub serve [MODULE.wasm] [--invoke FUNC] [--listen HOST:PORT]
                       [--once] [--log-packets] [--allow-remote] [--cache-dir DIR]
                       [--dialect native|wasm] [--dir HOST_DIR[::GUEST_DIR]]... [--env NAME[=VAL]]...
                       [--] [ARGS...]
    wasm-gdbstub host MODULE.wasm --invoke FUNC [ARGS...] [--workers N] [--listen HOST:PORT]
                      [--dialect native|wasm] [--hold] [--runs N]
    wasm-gdbstub host --http HOST:PORT MODULE.wasm --handler FUNC [--workers N] [--listen HOST:PORT]
    wasm-gdbstub run MODULE.wasm [--invoke FUNC] [--dir HOST_DIR[::GUEST_DIR]]... [--env NAME[=VAL]]...
                     [--] [ARGS...]
    wasm-gdbstub inspect MODULE.wasm [--func NAME]

Exit status: the guest's (0, a WASI exit status, or 1 after a trap); 2 for a
usage error or a module that does not compile or link.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import sys
from pathlib import Path

import codemem
from codemem import CompileError, LinkError, Trap

from . import runner
from .images import IMAGE_TRANSFERS, DebugImageSet
from .listen import listening_socket
from .listen import parse_listen as host_parse_listen
from .wasi import Preopen, WasiContext, WasiExit, WasiOptions, parse_env

# The server, the session and the protocol (asyncio, the request classes)
# are imported by `serve` after its socket listens (see serve), and by the
# other subcommands when they need them.

log = logging.getLogger(__name__)

EXIT_USAGE = 2
DEMO_MODULE = "demo.wasm"
DEMO_ENTRY = "run"


class UsageError(Exception):
    """Bad arguments or a module that cannot be served; the message says why."""


def add_image_transfer_argument(parser: argparse.ArgumentParser) -> None:
    """``--image-transfer``: how gdb gets the debug images (SessionConfig.image_transfer)."""
    parser.add_argument("--image-transfer", choices=IMAGE_TRANSFERS, default="auto",
                        help="how gdb gets the debug images: 'vfile' serves them over the connection, 'local' lets "
                             "gdb read them from this machine's files, 'auto' (default) is 'local' for a client "
                             "connected from a loopback address (gdb then warns that the target does not support "
                             "file transfer)")


def bundled_demo_path() -> Path:
    """The demo module shipped in the package (examples/demo.c at -O0)."""
    from importlib import resources
    return Path(str(resources.files("gdbstub") / "data" / DEMO_MODULE))


def default_cache_dir() -> Path:
    """Where serve caches compiled images and debug images unless told
    (``--cache-dir``, or ``WASM_GDBSTUB_CACHE`` for the compiled images)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasm-gdbstub"


def parse_listen(text: str, allow_remote: bool) -> tuple[str, int]:
    """``--listen``'s HOST:PORT (gdbstub.host.parse_listen), as a usage error."""
    try:
        return host_parse_listen(text, allow_remote=allow_remote)
    except ValueError as e:
        raise UsageError(f"--listen {e}") from None


def lldb_commands(host: str, port: int, libraries: list, executable=None) -> list[str]:
    """The lldb commands that attach to the stub in the native view
    (``libraries`` and ``executable``: gdbstub.images.LoadedImage).  lldb-22
    loads no image on a bare gdb-remote (../shared/notes/clients.md), so they
    create the target from the runtime image (linked where it runs), add each
    module's image and place it at its load bias (``--slide``) after
    connecting: lldb places a target's modules at their link addresses when
    it connects (docs/debug-images.md)."""
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    commands = []
    if executable is not None:
        commands.append(f"target create {executable.path}")
    commands += [f"target modules add {image.path}" for image in libraries]
    commands.append(f"gdb-remote {address}")
    commands += [f"target modules load --file {image.path} --slide {image.load_bias:#x}" for image in libraries]
    return commands


def wasm_lldb_commands(host: str, port: int) -> list[str]:
    """The lldb command that attaches lldb's wasm plugin (``--dialect wasm``)."""
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    return [f"process connect --plugin wasm connect://{address}"]


def attach_commands(host: str, port: int, libraries: list, executable=None) -> list[str]:
    """One line per debugger, each pasteable as printed."""
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    lldb = ["lldb-22"]
    for command in lldb_commands(host, port, libraries, executable):
        lldb += ["-o", shlex.quote(command)]
    return [f"gdb: gdb -ex {shlex.quote('target remote ' + address)}", "lldb: " + " ".join(lldb)]


def wasm_attach_commands(host: str, port: int) -> list[str]:
    """The banner's attach lines for ``--dialect wasm``: lldb's wasm plugin
    only (gdb has no wasm32 support); the gdb line says so, so every banner
    has both lines."""
    return ["gdb: none (gdb does not speak the wasm dialect; use lldb)",
            "lldb: lldb-22 -o " + shlex.quote(wasm_lldb_commands(host, port)[0])]


def write_lldb_commands(path: Path, commands: list[str]) -> None:
    """The attach commands, one a line, for lldb's ``command source PATH``
    (an IDE's attachCommands: README, "An IDE")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(command + "\n" for command in commands))
    temporary.replace(path)  # a reader never sees half a file


def _exit_status_of(exc: BaseException) -> int:
    if isinstance(exc, WasiExit):
        return exc.status & 0xFF
    return 1


def serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen, args.allow_remote)
    if args.module is None:
        path = bundled_demo_path()
        invoke = args.invoke or DEMO_ENTRY
    else:
        path = Path(args.module)
        invoke = args.invoke
    try:
        wasm = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    # Compiled images: --cache-dir, else WASM_GDBSTUB_CACHE, else the default.
    engine_cache = args.cache_dir or os.environ.get("WASM_GDBSTUB_CACHE") or cache_dir
    engine = codemem.Engine(debug=True, cache_dir=engine_cache)
    module = codemem.Module(engine, wasm, name=path.stem)
    wasis: list[WasiContext] = []

    def instantiate() -> tuple[codemem.Store, codemem.Instance, codemem.Func, list, str]:
        store = codemem.Store(engine)
        wasi = wasi_options(args).context([str(path)])
        wasis.append(wasi)
        instance = runner.instantiate(store, module, wasi=wasi)
        name = invoke or runner.default_entry(instance)
        if name is None:
            raise UsageError(f"{path} has no _start or main export; name one with --invoke FUNC")
        func = instance.exports.get(name)
        if not isinstance(func, codemem.Func):
            raise UsageError(f"{name!r} is not an exported function of {path}")
        if invoke is None and name == "_start":
            wasi.args.extend(args.args)
            values = []
        else:
            values = runner.parse_invoke_args(func, args.args)
        return store, instance, func, values, name

    store, instance, func, values, name = instantiate()
    wasm_dialect = args.dialect == "wasm"
    # lldb's wasm plugin reads the module itself (DWARF included) from the
    # stub's memory: no native debug images are made for it.
    images = None if wasm_dialect else DebugImageSet(cache_dir, process_tag=f"pid{os.getpid()}")

    def print_banner(bound_host: str, bound_port: int) -> None:
        print(f"wasm-gdbstub: serving {path.name} ({name}), stopped at its first instruction; "
              f"listening on {bound_host}:{bound_port}", flush=True)
        if args.lldb_commands:
            write_lldb_commands(Path(args.lldb_commands),
                                wasm_lldb_commands(bound_host, bound_port) if wasm_dialect
                                else lldb_commands(bound_host, bound_port, images.libraries(store),
                                                   images.executable(store)))
        if wasm_dialect:
            for line in wasm_attach_commands(bound_host, bound_port):
                print(line, flush=True)
            return
        for line in attach_commands(bound_host, bound_port, images.libraries(store), images.executable(store)):
            print(line, flush=True)

    if images is not None:
        # The Store's debug images are built (the first time) before the stub
        # listens: gdb reads them over vFile and would give up on a reply
        # that took longer than its remote timeout (2 s); lldb opens them
        # from disk.  A cached one is only read when a client asks for it
        # (a file read: tens of ms for a real-size module's 10 MiB).
        images.write_files(images.libraries(store))
        images.executable(store)
    # Listen, and say so, as soon as the Store and its images are ready: the
    # transport, the session and the protocol (asyncio, a hundred request
    # and reply classes: a third of a warm start) are imported after that,
    # while the user starts the debugger; a client that connects meanwhile
    # waits in the socket's backlog.  A host name (not an address) is bound
    # by the server itself, which prints the banner then.
    try:
        listener = listening_socket(host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    if listener is not None:
        bound_port = listener.getsockname()[1]
        print_banner(host, bound_port)

    from .image_files import ImageFileServer
    from .server import StubServer
    from .session import SessionConfig
    from .target import StoreTarget
    from .targets import SingleStoreHost

    if wasm_dialect:
        from .wasm_dialect import WasmDialect
        config = SessionConfig(dialect_factory=WasmDialect)
    else:
        config = SessionConfig(images=images, file_server=ImageFileServer(images), image_transfer=args.image_transfer)

    def new_target(store, instance, func, values) -> StoreTarget:
        holder: list[StoreTarget] = []
        target = StoreTarget(store, instance, func, values, notify=lambda: targets.target_news(holder[0]),
                             exit_status_of=_exit_status_of)
        holder.append(target)
        return target

    finished: list[StoreTarget] = []

    def restart() -> StoreTarget:
        """gdb's `run` (vRun, extended-remote): the served function again in a
        fresh Store, stopped before its first instruction.  Stores of earlier
        runs that have ended are closed (under the host lock: no session can
        be reading them)."""
        finished.append(targets.served)
        for old in [t for t in finished if t.join(0)]:
            finished.remove(old)
            old.mark_closed()
            old.store.close()
        fresh = new_target(*instantiate()[:4])
        fresh.start(stop_at_entry=True)
        return fresh

    target = new_target(store, instance, func, values)
    targets = SingleStoreHost(target, restart=restart)
    server = StubServer(targets, host=host, port=port, once=args.once, config=config,
                        on_listening=print_banner if listener is None else None, sock=listener)
    # Everything made so far (the module, its frame table, the images) lives
    # as long as the process: keep it out of the collector's scans, which
    # otherwise walk it again and again while a debugger steps.
    gc.freeze()
    target.start(stop_at_entry=True)
    try:
        exited = _run_loop(server.serve())
    finally:
        for wasi in wasis:
            wasi.flush()
            wasi.close()
        if images is not None:
            images.remove_files()  # they describe this process's code only
    return _report_exit(exited)


def _report_exit(exited) -> int:
    if exited is None:
        return 0
    if exited.error is None:
        text = runner.format_results(exited.results)
        if text:
            print(text, flush=True)
        return exited.status
    if isinstance(exited.error, Trap):
        runner._print_trap(exited.error, sys.stderr)
        return 1
    if isinstance(exited.error, WasiExit):
        return exited.status
    print(f"Error: {exited.error}", file=sys.stderr)
    return 1


def add_wasi_arguments(parser: argparse.ArgumentParser) -> None:
    """The WASI grants, with ``wasmtime run``'s flag names and meanings (every
    subcommand that runs a guest takes them; :func:`wasi_options` reads them)."""
    parser.add_argument("--dir", action="append", default=[], metavar="HOST_DIR[::GUEST_DIR]",
                        help="grant the guest a host directory, as GUEST_DIR (default: the same name)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VAL]",
                        help="set a guest environment variable (NAME alone: the host's value)")


def wasi_options(args: argparse.Namespace) -> WasiOptions:
    """What the guest gets: the ``--dir`` and ``--env`` grants of
    :func:`add_wasi_arguments`, and this process's stdin as its stdin."""
    return WasiOptions(preopens=tuple(Preopen.parse(d) for d in args.dir), env=tuple(parse_env(args.env)),
                       stdin=sys.stdin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasm-gdbstub", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a Store to gdb or lldb over TCP")
    p.add_argument("module", nargs="?", help="the .wasm module (default: the bundled demo)")
    p.add_argument("--invoke", metavar="FUNC", help="export to run (default: _start, main; run for the demo)")
    p.add_argument("args", nargs="*", help="arguments of FUNC, or argv[1:] of a WASI command (after --)")
    p.add_argument("--listen", default="127.0.0.1:1234", metavar="HOST:PORT")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --listen address")
    p.add_argument("--once", action="store_true", help="serve one client, then exit when the guest ends")
    p.add_argument("--log-packets", action="store_true", help="trace every packet both ways on stderr")
    p.add_argument("--cache-dir", metavar="DIR", help="cache of compiled and debug images (default ~/.cache/wasm-gdbstub)")
    add_image_transfer_argument(p)
    p.add_argument("--lldb-commands", metavar="FILE",
                   help="also write the lldb attach commands to FILE, for `command source FILE` "
                        "(an IDE's attachCommands)")
    p.add_argument("--dialect", choices=("native", "wasm"), default="native",
                   help="native: an x86-64 target for gdb and lldb (default); "
                        "wasm: LLDB's WebAssembly dialect (lldb --plugin wasm)")
    add_wasi_arguments(p)
    p.set_defaults(handler=serve)

    p = sub.add_parser("host", help="run FUNC again and again in fresh Stores (or serve HTTP requests, one "
                                    "Store each) while debuggers attach to any of them")
    p.add_argument("module")
    p.add_argument("--invoke", metavar="FUNC", help="the export each worker runs, again and again")
    p.add_argument("args", nargs="*", help="arguments of FUNC")
    p.add_argument("--http", metavar="HOST:PORT", help="serve HTTP instead: each request runs --handler in a fresh Store")
    p.add_argument("--handler", dest="handler_export", metavar="FUNC",
                   help="with --http: the export that handles a request")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker threads (default 2)")
    p.add_argument("--listen", default="127.0.0.1:1234", metavar="HOST:PORT", help="where debuggers connect")
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback addresses")
    p.add_argument("--dialect", choices=("native", "wasm"), default="native")
    p.add_argument("--cache-dir", metavar="DIR", help="cache of debug images (default ~/.cache/wasm-gdbstub)")
    add_image_transfer_argument(p)
    p.add_argument("--hold", action="store_true", help="start with hold-new-stores on")
    p.add_argument("--runs", type=int, metavar="N", help="stop after N runs in all (default: run until interrupted)")
    p.add_argument("--log-packets", action="store_true", help="trace every packet both ways on stderr")
    p.set_defaults(handler=lambda a: _host(a))

    p = sub.add_parser("run", help="run a module without a debugger")
    p.add_argument("module")
    p.add_argument("--invoke", metavar="FUNC")
    p.add_argument("args", nargs="*", help="arguments of FUNC, or argv[1:] of a WASI command (after --)")
    add_wasi_arguments(p)
    p.set_defaults(handler=lambda a: runner.run_module(a.module, a.invoke, a.args, wasi_options=wasi_options(a)))

    p = sub.add_parser("inspect", help="compiled code with sequence points and patch sites")
    p.add_argument("module")
    p.add_argument("--func", metavar="NAME")
    p.set_defaults(handler=lambda a: _inspect(a))
    return parser


def _host(args: argparse.Namespace) -> int:
    from .hosting import host_command
    return host_command(args)


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_module
    return inspect_module(args.module, args.func)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` is the guest's, whatever it looks like
    # and wherever the options before it were (argparse alone would take
    # `serve M.wasm --dir D -- files` as an unrecognized `files`).
    guest_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, guest_args = argv[:split], argv[split + 1:]
    args, extra = parser.parse_known_args(argv)
    # Arguments after the module that argparse left over belong to the guest
    # function: ones that look like options (negative numbers), and plain
    # words after an option (`serve M.wasm --invoke f --once 3`: argparse
    # fills the positionals once, before --once).  Its argument check then
    # names a bad one; an unknown option is still refused here.
    if extra:
        if args.command in ("serve", "run", "host") and all(
                _looks_numeric(x) or not x.startswith("-") for x in extra):
            args.args = list(args.args) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if guest_args:
        if not hasattr(args, "args"):  # a subcommand that runs no guest
            parser.error(f"unrecognized arguments: -- {' '.join(guest_args)}")
        args.args = list(args.args) + guest_args
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(name)s: %(message)s")
    if getattr(args, "log_packets", False):
        trace = logging.getLogger("gdbstub.protocol.trace")
        trace.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("packet %(message)s"))
        trace.addHandler(handler)
        trace.propagate = False
    try:
        return args.handler(args)
    except (UsageError, CompileError, LinkError, ValueError, TypeError) as e:
        print(f"wasm-gdbstub: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Trap as e:  # the start function trapped while instantiating
        runner._print_trap(e, sys.stderr)
        return 1
    except WasiExit as e:
        return e.status & 0xFF
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `inspect ... | head`: the reader left; say nothing more (and keep
        # Python's exit-time flush of stdout from raising again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.lower().lstrip("+-") in ("nan", "inf", "infinity") or text.lower().startswith(("-0x", "0x"))


if __name__ == "__main__":
    sys.exit(main())


def _run_loop(coro):
    """Runs the server on uvloop when it is installed (a dependency on Linux):
    a breakpoint hit is a handful of packet round trips and two thread
    hand-offs, and uvloop's event loop makes each of them cheaper (about a
    quarter of the stub's CPU per hit, scripts/bench/bp_roundtrip.py)."""
    try:
        import uvloop
    except ImportError:
        import asyncio
        return asyncio.run(coro)
    return uvloop.run(coro)
