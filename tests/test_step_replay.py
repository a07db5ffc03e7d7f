"""scripts/bench/step_replay.py: gdb's packets of a loop's `next`s, split
from its remote log and replayed against a stub (the deterministic measure
of docs/stepping.md "The stub's cost per stop, third pass")."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from _common import BenchError  # noqa: E402
import step_replay  # noqa: E402


def _log(nexts: list[list[str]], before: list[str]) -> str:
    """A remote log as gdb writes it: `w` lines for packets (with their ack),
    `r` lines for replies, `c` lines for commands."""
    lines = [f"w +${p}#00" for p in before]
    for packets in nexts:
        lines.append("c next")
        for packet in packets:
            lines += [f"w ${packet}#00", "r $OK#9a"]
    return "\n".join(lines + ["End of log"]) + "\n"


LOOP = [["vCont;r1,2:p1.1;c:p1.-1", "m10,40"], ["vCont;c:p1.-1", "z0,3,1"]]


def test_the_prelude_ends_before_the_fourth_next_and_the_period_is_the_fourth_and_fifth():
    into_loop = [["vCont;s:p1.1"], ["vCont;s:p1.1", "m0,1"], ["m8,8"]]
    log = _log(into_loop + LOOP + LOOP, ["qSupported:x", "QStartNoAckMode"])
    prelude, period = step_replay.loop_packets(log)
    assert prelude == [b"$qSupported:x#00", b"$QStartNoAckMode#00", b"$vCont;s:p1.1#00", b"$vCont;s:p1.1#00",
                       b"$m0,1#00", b"$m8,8#00"]
    assert period == [b"$vCont;r1,2:p1.1;c:p1.-1#00", b"$m10,40#00", b"$vCont;c:p1.-1#00", b"$z0,3,1#00"]


def test_a_loop_whose_packets_do_not_repeat_is_refused():
    other = [["vCont;r1,2:p1.1;c:p1.-1", "m10,40"], ["vCont;c:p1.-1", "z0,4,1"]]
    with pytest.raises(BenchError, match="not periodic"):
        step_replay.loop_packets(_log([[]] * 3 + LOOP + other, []))
    with pytest.raises(BenchError, match="6 nexts"):
        step_replay.loop_packets(_log([[]] * 3 + LOOP + LOOP[:1], []))


def test_a_replay_of_gdbs_own_packets_against_the_stub_checks_every_stop(tmp_path):
    prelude, period = step_replay.record(tmp_path)
    # gdb 13 over bench_loop's loop: 8 packets and 2.5 resumes per next (docs/stepping.md).
    assert len(period) == 16
    assert sum(p.startswith(b"$vCont;") for p in period) == 5
    figures = step_replay.replay(tmp_path, prelude, period, 20)
    assert set(figures) == {"stub_cpu_ms_per_next", "switches_per_next", "wall_ms_per_next"}
    assert figures["wall_ms_per_next"] > 0
