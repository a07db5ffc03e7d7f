"""Who hears what a guest writes to its stdout and stderr.

A WASI program's ``fd_write`` to descriptors 1 and 2 goes to the stub's own
streams (gdbstub.wasi) and, through :func:`emit`, to the listener registered
for its Store: the Store's debug target (gdbstub.target.StoreTarget), which
hands it to the server, which forwards it to an attached client as ``O``
packets while the client waits for a stop (GDB manual, "Stop Reply Packets":
``O XX...``).  A registry by Store keeps WASI free of any knowledge of
debuggers, and works for every way a Store is made (``serve``, ``host``, an
embedder's DebugHost).
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable

#: Store -> weak reference to a bound method listener(fd, data), called on
#: the guest thread (weak both ways: neither keeps the other alive).
_listeners: "weakref.WeakKeyDictionary[object, weakref.WeakMethod]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def listen(store, listener: Callable[[int, bytes], None]) -> None:
    """``listener(fd, data)`` (a bound method) hears ``store``'s guest writes
    to stdout (1) and stderr (2) from now on, replacing an earlier listener,
    for as long as its object lives."""
    with _lock:
        _listeners[store] = weakref.WeakMethod(listener)


def emit(store, fd: int, data: bytes) -> None:
    """Called by WASI after the guest wrote ``data`` to ``fd`` (1 or 2)."""
    with _lock:
        ref = _listeners.get(store)
    listener = ref() if ref is not None else None
    if listener is not None and data:
        listener(fd, data)
