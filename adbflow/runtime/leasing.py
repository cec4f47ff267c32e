"""How a stage uses a phone's slot lease: hold it around the stage, run the program guarded.

Why here (runtime) and not in the stage bodies: the lease policy is the orchestrator's
(owner id, ttl, what a lost lease means: discard and re-bid); `adbflow.device.lease` only
speaks the protocol. A stage calls `hold()` once it won the bid, pushes to the lease's
input path, and runs its program with `run()`; a `SlotBusy` from `hold()` sends the stage
to another device, a `LeaseLost` from `run()` discards the output.
"""
from __future__ import annotations

import contextlib
import secrets
import shlex
import time
from collections.abc import Iterator, Sequence
from typing import Any

from adbflow.device import lease
from adbflow.device.failures import exit_error
from adbflow.device.lease_rules import SlotState
from adbflow.device.port import DevicePort
from adbflow.device.results import ShellResult
from adbflow.errors import SlotBusy


class StageLeases:
    """Slot leases for one orchestrator process (one owner id for all its stages)."""

    def __init__(self, owner: str | None = None, *, ttl_s: float = lease.DEFAULT_TTL_S,
                 timeout_s: float = 10.0) -> None:
        self.owner = owner or lease.owner_id()
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s

    @contextlib.contextmanager
    def hold(self, device: DevicePort, slot: str) -> Iterator[lease.DeviceLease]:
        """Acquire (SlotBusy if taken), renew while inside, release on the way out. A lease
        left by a dead adbflow process of this laptop, or by an earlier attempt of this one,
        is released first (it must not block the phone for the rest of its TTL). Call it
        holding the dispatcher's slot for (device, slot)."""
        try:
            held = lease.acquire(device, slot, self.owner, ttl_s=self.ttl_s,
                                 timeout=self.timeout_s)
        except SlotBusy as busy:
            # Ours: an earlier attempt of this process whose release did not get through
            # (the phone dropped off); the caller holds our in-process slot for this
            # device and stage, so nothing of ours uses it any more.
            if busy.owner != self.owner and not lease.dead_local_owner(busy.owner):
                raise
            lease.call(device, "release", slot, busy.owner or "", busy.token, 0,
                       timeout=self.timeout_s)
            held = lease.acquire(device, slot, self.owner, ttl_s=self.ttl_s,
                                 timeout=self.timeout_s)
        try:
            with lease.Renewer(held):
                yield held
        finally:
            held.release()

    def run(self, held: lease.DeviceLease, argv: Sequence[str], *, timeout: float,
            max_output: int, move_input_to: str | None = None) -> ShellResult:
        """argv on the device only while `held` is current (checked before and after, in the
        same command). LeaseLost: discard. AdbError on a non-zero exit, like Device.run."""
        return self.run_timed(held, argv, timeout=timeout, max_output=max_output,
                              move_input_to=move_input_to)[0]

    def run_timed(self, held: lease.DeviceLease, argv: Sequence[str], *, timeout: float,
                  max_output: int, move_input_to: str | None = None
                  ) -> tuple[ShellResult, dict[str, Any]]:
        """`run`, plus the times devtime.run_timed gives: the host bracket and, on a real
        Device, the phone's own clock marks right around the program (inside the guard), so
        leased runs appear on the device's clock in traces like unleased ones."""
        from adbflow.device import Device
        from adbflow.runtime.devtime import mark_lines, split_marks
        nonce = secrets.token_hex(8)
        before, after = mark_lines() if isinstance(held.device, Device) else ("", "")
        cmd = held.guarded_command(argv, nonce, move_input_to=move_input_to, before=before,
                                   after=after)
        w0 = time.time()
        res = held.device.shell(cmd, timeout=timeout, check=False, max_output=max_output)
        times: dict[str, Any] = {"host": [w0, time.time()]}
        if before:
            clean, marks = split_marks(res.stderr)
            res = ShellResult(res.serial, res.cmd, res.exit_code, res.stdout, clean,
                              res.elapsed_s)
            if marks:
                times["device"] = marks
        stdout = held.check_run(res.stdout, nonce)
        shown = shlex.join(list(argv))
        if res.exit_code != 0:      # the same error class Device.run raises for it
            raise exit_error(held.serial, shown, stdout=stdout, stderr=res.stderr,
                             exit_code=res.exit_code)
        return (ShellResult(res.serial, shown, res.exit_code, stdout, res.stderr, res.elapsed_s),
                times)


def drop_busy(bids: Sequence[Any], slot: str, ours: str) -> tuple[list[Any], dict[str, SlotState]]:
    """Bids whose `slot` is not held by another orchestrator, and the held ones (shown in
    the decision). Pure: the bid already carries the phone's lease records."""
    kept, held = [], {}
    for b in bids:
        busy = b.slot_busy(slot, ours) if hasattr(b, "slot_busy") else None
        if busy is None:
            kept.append(b)
        else:
            held[b.serial] = busy
    return kept, held
