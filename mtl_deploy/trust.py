"""Importing user code: a checkpoint may name the factory that rebuilds its trunk
(`package.module:callable`), and that module is imported only when its top-level package
is trusted by the caller (`trust=`, CLI `--trust`, environment `MTL_DEPLOY_TRUST`).

A file never decides what runs: an untrusted name is refused before anything is imported,
and modules that run commands or evaluate code are refused even when trusted.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
from collections.abc import Callable, Iterable

from mtl_deploy.errors import InputError

TRUST_ENV = "MTL_DEPLOY_TRUST"
FACTORY = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
# callables in these packages run commands, evaluate code or touch files: never a trunk factory
NEVER = frozenset({"os", "posix", "nt", "builtins", "subprocess", "sys", "shutil", "importlib", "pickle", "marshal",
                   "runpy", "code", "codeop", "pty", "socket", "ctypes", "multiprocessing", "pathlib", "io",
                   "tempfile", "signal", "webbrowser", "platform", "asyncio", "threading", "eval", "exec"})


_SCOPE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("mtl_deploy_trust", default=frozenset())


def _as_names(trust: Iterable[str]) -> list[str]:
    names = [trust] if isinstance(trust, str) else list(trust)
    bad = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if bad:
        raise InputError(f"trust takes top-level package names, got {bad[0]!r}")
    return names


@contextlib.contextmanager
def trusting(trust: Iterable[str] = ()):
    """Within the block, factories from the packages in `trust` may be imported (a load or
    a training run passes its caller's `trust` down this way)."""
    token = _SCOPE.set(_SCOPE.get() | frozenset(_as_names(trust)))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def trusted_packages(trust: Iterable[str] = ()) -> set[str]:
    """The caller's `trust`, the enclosing `trusting` block's, and the comma-separated
    `MTL_DEPLOY_TRUST`."""
    extra = [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]
    return {*_as_names(trust), *_SCOPE.get(), *extra}


def parse_factory(name: str) -> tuple[str, str]:
    """`package.module:attr.path` -> (module, attr path); anything else is one InputError."""
    match = FACTORY.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise InputError(f"factory {str(name)[:80]!r} is not 'package.module:callable'")
    module = match["module"]
    if module.split(".")[0] in NEVER:
        raise InputError(f"factory {name[:80]!r} is in {module.split('.')[0]!r}, which is never imported as a "
                         "model factory")
    return module, match["attr"]


def resolve_factory(name: str, trust: Iterable[str] = ()) -> Callable:
    """The callable `name` names, imported only when its top-level package is trusted."""
    module_name, attr = parse_factory(name)
    package = module_name.split(".")[0]
    if package not in trusted_packages(trust):
        raise InputError(f"the model's trunk is built by {name!r} from package {package!r}, which is not trusted; "
                         f"nothing was imported: pass --trust {package} (or trust=({package!r},)) if you trust it")
    try:
        target = importlib.import_module(module_name)
    except Exception as err:  # a user module may fail any way on import
        raise InputError(f"factory module {module_name!r} cannot be imported ({type(err).__name__}: "
                         f"{str(err)[:120]})") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InputError(f"factory {name!r}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"factory {name!r} is not callable")
    return target
