"""Interpreter-start hook: with ``LOCKD_PATCH_LOCKUTILS=1``, patch oslo lockutils as soon as it is imported.

Run by ``lockd_lockutils_patch.pth`` (installed into site-packages with lockd), whose one line only imports
this module when the variable is set, so every other Python process pays one dictionary lookup.

Why an import hook and not an import: importing oslo.concurrency, tooz or lockd at interpreter start would
run before the program's own start-up (Cinder monkey-patches with eventlet first) and would slow every Python
process on the host. Instead a meta-path finder waits for ``oslo_concurrency.lockutils``, lets it load, and
patches it before the importer gets it back, so no driver can bind the original ``external_lock``.

This module must never break interpreter start: every failure becomes one line on stderr, and lockutils then
keeps its file locks (host-local, as without the hook). A ``LOCKD_BACKEND_URL`` that cannot name a backend is
reported here too, in one line; the patch stays on, so the locks it guards fail with the same message rather
than run without their cluster-wide part.

Lock scope: ``LOCKD_HOST_LOCAL_LOCKS`` (see ``drivers_shim.scope``) names the external locks that stay file
locks; unset, lockd's defaults apply. A value that cannot be parsed is reported in one stderr line and the patch
goes ahead with *no* host-local locks: a scope mistake may make locks wider than meant, never narrower, since only
the latter could let two hosts into the same critical section.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Sequence

TARGET = "oslo_concurrency.lockutils"
ENV_VAR = "LOCKD_PATCH_LOCKUTILS"
TRUE_VALUES = ("1", "true", "yes", "on")


def _warn(message: str, variable: str | None = ENV_VAR) -> None:
    try:
        sys.stderr.write(f"lockd: {variable}: {message}\n" if variable else f"lockd: {message}\n")
    except Exception:  # no usable stderr (daemons): stay silent rather than fail
        pass


def _patch(module: types.ModuleType) -> None:
    try:
        from drivers_shim.lockutils_patch import patch_lockutils
        from drivers_shim.scope import host_local_from_env
        from lockd.errors import UsageError

        try:
            host_local = host_local_from_env()
        except UsageError as exc:
            # The message names the variable already; the patch itself goes ahead (see the module docstring).
            _warn(f"{exc}; until it is fixed no lock is kept host-local, every external lock is a lockd lock", None)
            host_local = ()
        patch_lockutils(module, host_local=host_local)
        try:
            from lockd import runtime

            runtime.check_environment()
        except UsageError as exc:
            # Said now, at start-up, in one line; every cluster-wide lock raises the same until it is fixed.
            _warn(f"{exc}; every external lock that is not host-local will fail until it is fixed", None)
    except Exception as exc:  # a broken lockd install must not take the driver down with it
        _warn(f"could not patch oslo lockutils, its external locks stay host-local file locks: {exc!r}")


class _PatchingLoader(importlib.abc.Loader):
    """Wraps lockutils' real loader: run the module, then patch it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # Hand the module its real loader back first: get_source(), reload() and resources keep working.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _patch(module)


class _LockutilsFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it only swaps the loader of lockutils' real spec, once."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        _remove_finder()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _LockutilsFinder)]


def install() -> None:
    """Patch lockutils now if it is loaded, else when it is first imported; no-op unless the variable is set."""
    try:
        if os.environ.get(ENV_VAR, "").strip().lower() not in TRUE_VALUES:
            return
        module = sys.modules.get(TARGET)
        if module is not None:
            _patch(module)
            return
        if not any(isinstance(f, _LockutilsFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _LockutilsFinder())
    except Exception as exc:
        _warn(f"hook not installed: {exc!r}")
