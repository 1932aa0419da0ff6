"""Run a sealgate command and kill the process (os._exit, as SIGKILL would: no cleanup, no finally blocks) at the
K-th call that changes the filesystem. Used by the fault-injection tests.

usage: python fault_runner.py K sealgate-arguments...
Exit status 137 when killed, otherwise the command's own status.
"""

from __future__ import annotations

import os
import sys

KILLED = 137
_MUTATIONS = ("link", "rename", "replace", "symlink", "unlink", "fsync", "mkdir", "rmdir", "fchmod", "write")


def main() -> int:
    limit = int(sys.argv[1])
    calls = 0

    def wrap(original):  # type: ignore[no-untyped-def]
        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls >= limit:
                os._exit(KILLED)
            return original(*args, **kwargs)

        return counted

    for name in _MUTATIONS:
        setattr(os, name, wrap(getattr(os, name)))
    from sealgate.cli.main import main as sealgate

    status = sealgate(sys.argv[2:])
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
