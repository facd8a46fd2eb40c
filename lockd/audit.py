"""Find the lock call sites in Python source, and say which are host-local today and what the lockd patch changes.

A migration aid for operators who cannot read every vendor driver: ``lockd audit-locks PATH...`` parses each
file with ``ast`` (nothing is imported or run) and reports, per call site:

- oslo.concurrency external locks (``lockutils.synchronized/lock(..., external=True)``, ``external_lock``,
  Cinder's ``utils.synchronized(..., external=True)``, i.e. ``synchronized_with_prefix('cinder-')``): file locks
  in ``lock_path``, so **host-local** today; **distributed** with ``LOCKD_PATCH_LOCKUTILS=1``;
- oslo internal locks (no ``external=True``): in-process today and unchanged by the patch;
- ``coordination.synchronized`` / ``COORDINATOR.get_lock``: tooz locks, distributed exactly when
  ``[coordination] backend_url`` is (``lockd+etcd3+http://...``; the default ``file://`` is host-local);
- ``drivers_shim.synchronized``: lockd already;
- fasteners / ``lockutils.InterProcessLock`` file locks taken directly: host-local and **not** covered;
- os-brick's connector locks (``os_brick.initiator.connectors.base.synchronized``, prefix ``os-brick-``): oslo
  external locks like the first kind.

Lock scope: each oslo external lock also gets a ``scope``, from the same patterns the patch uses
(``drivers_shim.scope``, the defaults unless others are given): ``host-local`` when the patch keeps it a file lock
(its ``with_patch`` is then ``unchanged``), ``cluster-wide`` when it becomes a lockd lock. A name built at run time
is host-local only when its fixed start decides it (``'os-brick-' + x`` under ``os-brick-*``).

Names are resolved through the file's imports and its ``x = lockutils.synchronized_with_prefix(...)`` aliases;
a module called ``utils`` whose origin cannot be resolved is taken to be Cinder's (``cinder-`` prefix).
It is a static scan: names built at run time are shown as the expression that builds them.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lockd.errors import UsageError

if TYPE_CHECKING:
    from drivers_shim.scope import LockScope

OSLO = "oslo_concurrency.lockutils"
CINDER_PREFIX = "cinder-"
OS_BRICK_SYNCHRONIZED = "os_brick.initiator.connectors.base.synchronized"
OS_BRICK_PREFIX = "os-brick-"

HOST_LOCAL = "host-local"
IN_PROCESS = "in-process"
COORDINATION = "coordination"
DISTRIBUTED = "distributed"
HOST_LOCAL_IF_EXTERNAL = "host-local if external"

BECOMES_DISTRIBUTED = "distributed"
UNCHANGED = "unchanged"
NOT_COVERED = "not covered"
BACKEND_URL = "distributed if backend_url=lockd+etcd3+http://"

#: ``LockSite.scope`` of an oslo external lock under the lock scope in force (None for every other site).
SCOPE_HOST_LOCAL = "host-local"
SCOPE_CLUSTER_WIDE = "cluster-wide"

#: oslo functions whose call takes (name, lock_file_prefix, external, ...) and holds a lock.
_OSLO_LOCKERS = {f"{OSLO}.synchronized": "lockutils.synchronized", f"{OSLO}.lock": "lockutils.lock"}
#: factories returning a partial of the locker with lock_file_prefix bound.
_OSLO_FACTORIES = {
    f"{OSLO}.synchronized_with_prefix": f"{OSLO}.synchronized",
    f"{OSLO}.lock_with_prefix": f"{OSLO}.lock",
    f"{OSLO}.remove_external_lock_file_with_prefix": f"{OSLO}.remove_external_lock_file",
}
_DIRECT_FILE_LOCKS = {
    "fasteners.InterProcessLock",
    "fasteners.process_lock.InterProcessLock",
    "fasteners.interprocess_locked",
    "fasteners.InterProcessReaderWriterLock",
    f"{OSLO}.InterProcessLock",
}


@dataclasses.dataclass(frozen=True)
class LockSite:
    """One place in the source that takes (or cleans up) a lock."""

    path: str
    line: int
    function: str | None  #: the enclosing def, dotted through classes
    usage: str  #: decorator, with or call
    api: str  #: what was called, as people know it (``utils.synchronized``)
    name: str  #: the lock name as written: a literal, a template, or the expression that builds it
    literal: bool  #: True when ``name`` is a string literal (a template for coordination locks)
    lock_name: str | None  #: the lockd lock name (with prefix) when it can be known statically
    today: str  #: host-local, in-process, coordination or distributed
    with_patch: str  #: distributed, unchanged, not covered, no-op, or the backend_url condition
    scope: str | None = None  #: oslo external locks: host-local (kept a file lock by the scope) or cluster-wide


@dataclasses.dataclass
class AuditReport:
    sites: list[LockSite]
    files_scanned: int
    skipped: list[tuple[str, str]]  #: (path, reason) of files that could not be parsed

    def summary(self) -> dict[str, int]:
        count = lambda pred: sum(1 for s in self.sites if pred(s))  # noqa: E731
        return {
            "sites": len(self.sites),
            "host_local": count(lambda s: s.today == HOST_LOCAL),
            "become_distributed": count(lambda s: s.today == HOST_LOCAL and s.with_patch == BECOMES_DISTRIBUTED),
            "kept_host_local": count(lambda s: s.scope == SCOPE_HOST_LOCAL),
            "not_covered": count(lambda s: s.with_patch == NOT_COVERED),
            "in_process": count(lambda s: s.today == IN_PROCESS),
            "coordination": count(lambda s: s.today == COORDINATION),
            "distributed": count(lambda s: s.today == DISTRIBUTED),
            "files_scanned": self.files_scanned,
            "files_skipped": len(self.skipped),
        }


def python_files(paths: Iterable[str]) -> Iterator[Path]:
    """Every ``.py`` file under the given files and directories, in a stable order; hidden dirs are skipped.

    Raises:
        UsageError: a path does not exist (checked for all paths before anything is scanned).
    """
    given = [Path(p) for p in paths]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    for path in given:
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    yield Path(root) / name


def audit(paths: Iterable[str], host_local: Iterable[str] | None = None) -> AuditReport:
    """Scan ``paths`` (files or directories).

    ``host_local``: the lock scope's patterns to judge sites by (``drivers_shim.scope``); None for the defaults.
    Raises:
        UsageError: a path does not exist, or a bad pattern (both checked before anything is scanned).
    """
    scope = lock_scope(host_local)
    report = AuditReport([], 0, [])
    for path in python_files(paths):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError) as exc:
            report.skipped.append((str(path), f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        report.files_scanned += 1
        report.sites.extend(scan_tree(tree, str(path), scope))
    return report


def scan_source(source: str, path: str = "<source>", host_local: Iterable[str] | None = None) -> list[LockSite]:
    """The lock sites of one module's source text (raises SyntaxError if it does not parse)."""
    return scan_tree(ast.parse(source, filename=path), path, lock_scope(host_local))


def lock_scope(host_local: Iterable[str] | None = None) -> LockScope:
    """The patch's lock scope for these patterns (None: its defaults). Raises UsageError for a bad pattern."""
    from drivers_shim.scope import DEFAULT_HOST_LOCAL_LOCKS, LockScope

    return LockScope(DEFAULT_HOST_LOCAL_LOCKS if host_local is None else host_local)


def scan_tree(tree: ast.Module, path: str, scope: LockScope | None = None) -> list[LockSite]:
    scanner = _Scanner(path, scope if scope is not None else lock_scope())
    scanner.collect_names(tree)
    scanner.visit(tree)
    return sorted(scanner.sites, key=lambda s: s.line)


@dataclasses.dataclass(frozen=True)
class _Alias:
    """A local name bound to an oslo partial: ``synchronized = lockutils.synchronized_with_prefix('nova')``."""

    target: str  #: the oslo function it partially applies
    prefix: ast.expr


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, scope: LockScope) -> None:
        self.path = path
        self.lock_scope = scope
        self.imports: dict[str, str] = {}
        self.aliases: dict[str, _Alias] = {}
        self.usage: dict[int, str] = {}  # id(call node) -> decorator / with
        self.skip: set[int] = set()  # factory calls that are part of a bigger site
        self.enclosing: list[str] = []  # the defs and classes around the node being visited
        self.sites: list[LockSite] = []

    # -- name resolution --------------------------------------------------------------------------------------

    def collect_names(self, tree: ast.Module) -> None:
        """Imports anywhere in the file, and module/class-level aliases of the oslo factories."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self.imports[top] = top
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}" if base else alias.name
                    self.imports[alias.asname or alias.name] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                target = _OSLO_FACTORIES.get(self.qualify(node.value.func) or "")
                prefix = _argument(node.value, 0, "lock_file_prefix")
                if target and prefix is not None:
                    self.skip.add(id(node.value))
                    for name in node.targets:
                        if isinstance(name, ast.Name):
                            self.aliases[name.id] = _Alias(target, prefix)

    def qualify(self, node: ast.expr) -> str | None:
        """``lockutils.synchronized`` -> ``oslo_concurrency.lockutils.synchronized`` through the imports."""
        if isinstance(node, ast.Name):
            return self.imports.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualify(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    # -- traversal --------------------------------------------------------------------------------------------

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.enclosing.append(node.name)  # a decorator's site is reported as the function it guards
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call):
                self.usage[id(decorator)] = "decorator"
            self.visit(decorator)
        for child in node.body:
            self.visit(child)
        self.enclosing.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_def

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            if isinstance(item.context_expr, ast.Call):
                self.usage[id(item.context_expr)] = "with"
        self.generic_visit(node)

    visit_AsyncWith = visit_With

    def visit_Call(self, node: ast.Call) -> None:
        if id(node) not in self.skip:
            self._classify(node)
        self.generic_visit(node)

    # -- classification ---------------------------------------------------------------------------------------

    def _classify(self, node: ast.Call) -> None:
        func = node.func
        # lockutils.synchronized_with_prefix('x')('name', ...): the factory call is part of this site
        if isinstance(func, ast.Call):
            target = _OSLO_FACTORIES.get(self.qualify(func.func) or "")
            prefix = _argument(func, 0, "lock_file_prefix")
            if target and prefix is not None:
                self.skip.add(id(func))
                self._oslo(node, target, prefix, shifted=True, api=_short(target) + "_with_prefix(...)")
            return
        if isinstance(func, ast.Name) and func.id in self.aliases and func.id not in self.imports:
            alias = self.aliases[func.id]
            self._oslo(node, alias.target, alias.prefix, shifted=True, api=func.id)
            return
        qualified = self.qualify(func)
        if qualified is None:
            return
        if qualified in _OSLO_LOCKERS or qualified in (f"{OSLO}.external_lock", f"{OSLO}.remove_external_lock_file"):
            self._oslo(node, qualified, _argument(node, 1, "lock_file_prefix"), shifted=False, api=_short(qualified))
        elif qualified in _DIRECT_FILE_LOCKS:
            self._add(
                node,
                qualified.replace(f"{OSLO}.", "lockutils."),
                _argument(node, 0, "path"),
                None,
                HOST_LOCAL,
                NOT_COVERED,
            )
        elif qualified == "drivers_shim.synchronized":
            self._add(
                node, "drivers_shim.synchronized", _argument(node, 0, "name"), CINDER_PREFIX, DISTRIBUTED, UNCHANGED
            )
        elif _ends_with(qualified, "coordination.synchronized") and not qualified.startswith("tooz."):
            self._add(
                node,
                "coordination.synchronized",
                _argument(node, 0, "lock_name"),
                CINDER_PREFIX,
                COORDINATION,
                BACKEND_URL,
            )
        elif _ends_with(qualified, "COORDINATOR.get_lock"):
            self._add(
                node,
                "coordination.COORDINATOR.get_lock",
                _argument(node, 0, "name"),
                CINDER_PREFIX,
                COORDINATION,
                BACKEND_URL,
            )
        elif qualified == OS_BRICK_SYNCHRONIZED:
            # (name, lock_file_prefix='os-brick-', external=False, lock_path=None, ...) around lockutils.lock()
            prefix = _argument(node, 1, "lock_file_prefix") or ast.Constant(OS_BRICK_PREFIX)
            self._oslo(node, f"{OSLO}.synchronized", prefix, shifted=False, api="os-brick base.synchronized")
        elif _ends_with(qualified, "utils.synchronized") and not qualified.startswith("oslo_"):
            # cinder.utils.synchronized = lockutils.synchronized_with_prefix('cinder-')
            self._oslo(
                node, f"{OSLO}.synchronized", ast.Constant(CINDER_PREFIX), shifted=True, api="utils.synchronized"
            )

    def _oslo(self, node: ast.Call, target: str, prefix: ast.expr | None, shifted: bool, api: str) -> None:
        """An oslo lock call. ``shifted``: a partial with the prefix bound, so ``external`` is keyword-only."""
        name = _argument(node, 0, "name")
        if target.endswith(".remove_external_lock_file"):
            # The patch leaves file removal to oslo: the file lock is still taken, and lockd keeps no file.
            self._add(node, api, name, prefix, HOST_LOCAL, UNCHANGED, cleanup=True)
            return
        if target.endswith(".external_lock"):
            external: bool | None = True
        else:
            expr = _argument(node, None if shifted else 2, "external")
            external = False if expr is None else (expr.value if isinstance(expr, ast.Constant) else None)
        if external is False:
            self._add(node, api, name, prefix, IN_PROCESS, UNCHANGED)
        elif external is True:
            self._add(node, api, name, prefix, HOST_LOCAL, BECOMES_DISTRIBUTED)
        else:  # external=<expression>: both, depending on the run
            self._add(node, api, name, prefix, HOST_LOCAL_IF_EXTERNAL, "distributed if external")

    def _add(
        self,
        node: ast.Call,
        api: str,
        name: ast.expr | None,
        prefix: ast.expr | str | None,
        today: str,
        with_patch: str,
        cleanup: bool = False,
    ) -> None:
        literal = isinstance(name, ast.Constant) and isinstance(name.value, str)
        shown = name.value if literal else ("?" if name is None else ast.unparse(name))  # type: ignore[union-attr]
        if isinstance(prefix, ast.expr):  # a variable prefix is unknown; a literal None is no prefix
            prefix_known = isinstance(prefix, ast.Constant) and (prefix.value is None or isinstance(prefix.value, str))
            prefix_value = prefix.value if prefix_known else None  # type: ignore[attr-defined]
        else:
            prefix_value, prefix_known = prefix, True
        lock_name = None
        scope = None
        if today in (HOST_LOCAL, HOST_LOCAL_IF_EXTERNAL) and with_patch != NOT_COVERED:  # an oslo external lock
            from drivers_shim.lockutils_patch import lock_name as oslo_lock_name

            mapped = oslo_lock_name(shown, prefix_value) if literal and prefix_known else None
            if mapped is not None:
                host_local = self.lock_scope.is_host_local(mapped)
            else:
                start = _known_start(name, prefix_value) if prefix_known else ""
                host_local = self.lock_scope.covers_every_name_starting_with(start)
            scope = SCOPE_HOST_LOCAL if host_local else SCOPE_CLUSTER_WIDE
            if host_local:
                with_patch = UNCHANGED  # the patch hands it to oslo's own file lock alone
            if not cleanup:
                lock_name = mapped
        elif literal and today in (COORDINATION, DISTRIBUTED):
            lock_name = f"{CINDER_PREFIX}{shown}"
        self.sites.append(
            LockSite(
                path=self.path,
                line=node.lineno,
                function=".".join(self.enclosing) or None,
                usage=self.usage.get(id(node), "call"),
                api=api + (" (cleanup)" if cleanup else ""),
                name=shown,
                literal=literal,
                lock_name=lock_name,
                today=today,
                with_patch=with_patch,
                scope=scope,
            )
        )


def _argument(node: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    for kw in node.keywords:
        if kw.arg == keyword:
            return kw.value
    if position is not None and len(node.args) > position and not isinstance(node.args[position], ast.Starred):
        return node.args[position]
    return None


def _known_start(name: ast.expr | None, prefix: str | None) -> str:
    """What every lockd name built from ``name`` (an expression) under ``prefix`` starts with, or ``""``.

    Kept short and printable on purpose: a name too long or odd for lockd is hashed but keeps its first 200
    characters (``lockutils_patch.lock_name``), so a start of at most 100 printable characters holds either way.
    """
    from drivers_shim.lockutils_patch import lock_name as oslo_lock_name

    if prefix and not all(" " <= ch <= "~" for ch in prefix):
        return ""  # the whole name is hashed, its start shown with '?': claim nothing
    head = _fixed_head(name) if name is not None else ""
    printable = next((i for i, ch in enumerate(head) if not " " <= ch <= "~"), len(head))
    head = head[: min(printable, 100)]
    if not head and not prefix:
        return ""
    return oslo_lock_name(head, prefix)[:100]


def _fixed_head(expr: ast.expr) -> str:
    """The text every value of a string expression starts with, as far as the source fixes it.

    ``'a-' + x``, ``f'a-{x}'``, ``'a-%s' % x`` and ``'a-{}'.format(x)`` -> ``a-``. Stopping at the first ``%``
    or ``{`` also stops before their escaped forms (``%%``, ``{{``), so the head is never too long.
    """
    if isinstance(expr, ast.Constant):
        return expr.value if isinstance(expr.value, str) else ""
    if isinstance(expr, ast.JoinedStr):
        head = ""
        for part in expr.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            head += part.value
        return head
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left = expr.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str):
            return left.value + _fixed_head(expr.right)
        return _fixed_head(left)  # (x + 'a') + y: only what the left part fixes
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
        if isinstance(expr.left, ast.Constant) and isinstance(expr.left.value, str):
            return expr.left.value.split("%", 1)[0]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "format":
        template = expr.func.value
        if isinstance(template, ast.Constant) and isinstance(template.value, str):
            return template.value.split("{", 1)[0]
    return ""


def _ends_with(qualified: str, suffix: str) -> bool:
    return qualified == suffix or qualified.endswith("." + suffix)


def _short(qualified: str) -> str:
    return qualified.replace(f"{OSLO}.", "lockutils.")
