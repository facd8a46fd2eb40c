"""What Cinder driver code imports to take distributed locks and make fenced status transitions."""

import lockd  # noqa: F401 - first: it keeps eventlet's import-time notice (via tooz) off the driver's stderr
from drivers_shim.lockutils_patch import patch_lockutils, unpatch_lockutils
from drivers_shim.synchronized import synchronized
from drivers_shim.transition import transition
from lockd.errors import LockAcquireFailed, LockLost, TransitionConflict
from lockd.runtime import configure

__all__ = [
    "LockAcquireFailed",
    "LockLost",
    "TransitionConflict",
    "configure",
    "patch_lockutils",
    "synchronized",
    "transition",
    "unpatch_lockutils",
]
