"""This host as a Machine: a stable id derived from the OS machine id, plus facts."""

from __future__ import annotations

import hashlib
import platform
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MachineInfo:
    """Identity and facts of the machine this process runs on."""

    id: str
    hostname: str
    os: str
    arch: str


def _os_machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if value:
            return value
    # No OS machine id (some containers): the MAC-derived node id is the next stablest.
    return f"node-{uuid.getnode():012x}"


def this_machine() -> MachineInfo:
    """The Machine for this host; the id is a hash so the raw OS id is never exposed.
    ARCHIVEFLOW_MACHINE_ID names it instead (several workers on one host, or no stable OS
    id)."""
    from archiveflow.settings import settings

    raw = _os_machine_id()
    mid = settings().machine_id or hashlib.sha256(f"archiveflow:{raw}".encode()).hexdigest()[:16]
    return MachineInfo(
        id=mid,
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
    )
