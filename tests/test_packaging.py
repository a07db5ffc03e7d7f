"""`pip install .` alone (no test extra) yields a working CLI.

The install goes into a fresh virtual environment that holds nothing but the
project's wheel and the closure of its *declared runtime* dependencies
(pyproject ``dependencies``, followed through each distribution's own
``Requires-Dist``).  Those distributions are linked in from this venv rather
than downloaded, so the test needs no network and still fails the way a user's
``pip install .`` does when a shipped module imports something undeclared
(``ModuleNotFoundError: No module named 'elftools'`` was that bug).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DEMO_WASM = ROOT / "examples" / "build" / "demo.O0.wasm"
DEMO_RESULT = "505"


def _runtime_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that ``requirements`` need, transitively
    (markers evaluated for this interpreter, no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = requirement.name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(requirement.name)
        seen[key] = dist
        pending.extend(Requirement(text) for text in dist.requires or ())
    return list(seen.values())


def _link_distribution(dist: metadata.Distribution, site: Path) -> None:
    """Symlinks every file ``dist`` installed under site-packages into ``site``."""
    for file in dist.files or ():
        if ".." in file.parts:
            continue  # scripts and data outside site-packages
        source = Path(dist.locate_file(file))
        destination = site / file
        if not source.exists() or destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.symlink_to(source)


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A venv with the project's wheel and its declared runtime dependencies only."""
    work = tmp_path_factory.mktemp("packaging")
    wheels = work / "wheels"
    # No build isolation: the build requirements (setuptools, cffi) are this venv's.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, cwd=work, capture_output=True)
    wheel = next(wheels.glob("wasm_gdbstub-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, cwd=work, capture_output=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    declared = metadata.PathDistribution(next(site.glob("wasm_gdbstub-*.dist-info"))).requires or []
    for dist in _runtime_closure([text for text in declared if "extra ==" not in text]):
        _link_distribution(dist, site)
    return venv


def _run(venv: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "wasm-gdbstub"), *args], cwd=venv.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_pip_install_builds_the_extension(runtime_venv):
    probe = "import codemem, codemem.native as n; print(n.REGFILE_SIZE, n.lib.cm_breakpoint_trampoline_address() != 0)"
    out = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", probe], check=True,
                         capture_output=True, text=True, cwd=runtime_venv.parent)
    assert out.stdout.split() == ["424", "True"]


@pytest.mark.timeout(300)
def test_the_runtime_venv_has_no_test_extra(runtime_venv):
    probe = "import importlib.util as u; print([m for m in ('pytest', 'wasmtime', 'hypothesis') if u.find_spec(m)])"
    out = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", probe], check=True,
                         capture_output=True, text=True, cwd=runtime_venv.parent)
    assert out.stdout.strip() == "[]"


@pytest.mark.timeout(300)
def test_wasm_gdbstub_run_works_without_the_test_extra(runtime_venv):
    result = _run(runtime_venv, "run", str(DEMO_WASM), "--invoke", "run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [DEMO_RESULT]


def _rsp(sock: socket.socket, payload: bytes) -> bytes:
    """Sends one packet (ack mode) and returns the payload of the reply."""
    sock.sendall(b"$%s#%02x" % (payload, sum(payload) % 256))
    data = b""
    while not (b"#" in data and len(data) >= data.index(b"#") + 3):
        chunk = sock.recv(4096)
        assert chunk, f"the stub closed the connection; got {data!r}"
        data += chunk
    data = data.lstrip(b"+")
    sock.sendall(b"+")
    return data[1:data.index(b"#")]


@pytest.mark.timeout(300)
def test_wasm_gdbstub_serve_works_without_the_test_extra(runtime_venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([str(runtime_venv / "bin" / "wasm-gdbstub"), "serve", "--listen", "127.0.0.1:0",
                             "--once", "--cache-dir", str(tmp_path / "images")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            assert _rsp(sock, b"qXfer:exec-file:read::0,1000").startswith(b"l")  # the debug image exists
            assert _rsp(sock, b"?").startswith(b"T05")
            assert _rsp(sock, b"D") == b"OK"
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, err
        assert out.split()[-1] == DEMO_RESULT, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
