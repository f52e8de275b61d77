"""The harness's error family.

Every error a user can cause (a missing file, a malformed PEM, a wrong PFX password, a bad option) is a
:class:`UsageError`: the CLI prints its one-line message and exits with code 2, with no traceback. Errors the
environment causes (a component that does not start, a tool that is not installed) say what was awaited, what was
seen last and how to fix it.
"""

from __future__ import annotations

import importlib.util

__all__ = [
    "EXTRAS",
    "HarnessError",
    "InputError",
    "MissingExtra",
    "StartError",
    "ToolMissingError",
    "Unavailable",
    "UsageError",
    "WaitTimeout",
    "need_extra",
]

#: the optional dependency groups of pyproject.toml ([project.optional-dependencies]) by the modules they provide:
#: heavy packages only some commands need; ``pip install 'mtls-harness[all]'`` installs every one
EXTRAS: dict[str, tuple[str, ...]] = {
    "plot": ("matplotlib",),  # the rotation rehearsal's timeline plot
    "capture": ("scapy",),  # the --isolate wire proof (packet analysis)
    "containers": ("testcontainers", "docker"),  # the containers target
    "kind": ("kubernetes", "kubernetes_validate", "testcontainers", "docker"),  # the kind target, manifest checks
    "azure": ("azure.identity", "azure.mgmt.apimanagement", "azure.mgmt.network", "azure.mgmt.containerservice",
              "azure.keyvault.certificates", "kubernetes"),  # the azure target, live Entra tokens
}


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    #: process exit code the CLI uses for this error
    exit_code = 1


class UsageError(HarnessError):
    """The user gave something unusable: a bad option, a missing file, a wrong password."""

    exit_code = 2


class LaneRefused(UsageError):
    """A renderer refused one lane (a variant served beside the chain, harness.targets.lanes): ``lane`` is its
    1-based position in the ``lanes`` the renderer was given. The caller drops that lane and renders the rest."""

    def __init__(self, lane: int, message: str) -> None:
        super().__init__(message)
        self.lane = lane


class InputError(UsageError):
    """An input file is missing or unusable. The message names the file, what is wrong, and the fix."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem} — {fix}")


class ToolMissingError(UsageError):
    """A binary the harness needs (nginx, envoy, docker, kind, kubectl) is not installed."""

    def __init__(self, tool: str, install_hint: str) -> None:
        self.tool = tool
        self.install_hint = install_hint
        super().__init__(f"{tool} not found — {install_hint}")


class MissingExtra(ToolMissingError):
    """A Python package of an optional extra is not installed: one line naming the package and the pip command."""

    def __init__(self, module: str, extra: str, what: str) -> None:
        self.extra = extra
        super().__init__(f"{module} (Python package)",
                         f"{what} needs it: pip install 'mtls-harness[{extra}]'")


def need_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` (see :data:`EXTRAS`) can be imported."""
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            raise MissingExtra(module, extra, what)


class StartError(HarnessError):
    """A component did not start. The message carries the tail of its log."""


class WaitTimeout(HarnessError, TimeoutError):
    """Something awaited did not become ready in time: names what, the last error seen, and the log tail."""


class Unavailable(HarnessError):
    """The chain cannot give what was asked of it (an identity an attached chain was not given, a fault variant a
    read-only target cannot make). The message says why; the case runner turns it into a skip with that reason."""
