"""Exit codes of the command line, and the error that carries one: a user error is one line, never a traceback.

The codes above 2 are BSD sysexits, which systemd names in `systemctl status` (e.g. `status=78/CONFIG`).
The table is printed by `interlink-plugin --help` and in docs/site-admin-guide.md (a test keeps them equal).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    API_LISTENER = 3
    DATAERR = 65
    NOINPUT = 66
    UNAVAILABLE = 69
    CANTCREAT = 73
    CONFIG = 78


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.CHECK_FAILED: "check: at least one check failed (its [FAIL] lines say which)",
    ExitCode.USAGE: "command line: unknown command or option, missing argument",
    ExitCode.API_LISTENER: "serve: the API server could not start (its message is in the log)",
    ExitCode.DATAERR: "render's pod or manifest is invalid or refused (the plugin would answer 4xx); "
                      "the state has a newer schema",
    ExitCode.NOINPUT: "render's pod or manifest file is missing or unreadable",
    ExitCode.UNAVAILABLE: "serve: MetricsAddress cannot be listened on (in use, not this host's)",
    ExitCode.CANTCREAT: "DataRootFolder, StateDir or the state database cannot be created or used",
    ExitCode.CONFIG: "the config file is missing, unreadable, not YAML, or has a bad value",
}


class UserError(Exception):
    """A problem the user can fix: printed as one line, the process exits with `code`."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def help_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {int(code):>3}  {text}" for code, text in MEANINGS.items())
