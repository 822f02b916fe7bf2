"""The htcondor2 bindings behind one small async interface.

Every binding call runs in ONE dedicated worker thread (the C++ library is not meant for
concurrent use from several threads) and is awaited with a timeout; the event loop never blocks.
A failure to reach the collector or schedd is BackendUnavailable naming the daemon and the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from interlink_plugins import tracing
from interlink_plugins.config import Config
from interlink_plugins.core.errors import BackendUnavailable, SubmitRejected
from interlink_plugins.htcondor import security
from interlink_plugins.htcondor.settings import HTCondorSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# submit errors that mean "the schedd refused this job" (anything else is an outage: retried)
_REFUSED = re.compile(
    r"create job ad|requirement|not permitted|permission denied|invalid|not allowed|exceed|limit|quota",
    re.IGNORECASE,
)


class CondorClient:
    """Schedd and collector calls; ``what`` names the call in errors ("schedd il-htcondor: query")."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="htcondor")
        self._token_dir = config.state_dir / f"htcondor-tokens-{config.instance_id}"
        self.params = security.client_params(config, self._token_dir)
        self._schedd: Any = None
        self._location: Any = None  # the schedd's location ad, when found through a collector
        self._applied = False
        self._located = ""
        self.calls: dict[str, int] = {}  # per call kind, for benchmarks and tests

    @property
    def settings(self) -> HTCondorSettings:
        return self.config.section(HTCondorSettings)

    @property
    def schedd_name(self) -> str:
        return self.settings.htcondor_schedd or self._located or "(local schedd)"

    # --- plumbing --------------------------------------------------------------------------

    def _apply_params(self) -> None:
        import htcondor2

        if self.settings.htcondor_token_file and "IDTOKENS" in self.settings.htcondor_auth:
            changed = security.install_token(self.settings.htcondor_token_file, self._token_dir)
            if changed and self._applied:
                self._schedd = None  # new sessions with the new token
        if not self._applied:
            for key, value in self.params.items():
                htcondor2.param[key] = value
            self._applied = True

    def _locate(self) -> Any:
        import htcondor2

        if self._schedd is not None:
            return self._schedd
        if not self.settings.htcondor_collector:
            self._schedd = htcondor2.Schedd()
            return self._schedd
        collector = htcondor2.Collector(self.settings.htcondor_collector)
        name = self.settings.htcondor_schedd
        if not name:
            ads = collector.query(htcondor2.AdTypes.Schedd, projection=["Name"])
            names = sorted(str(ad["Name"]) for ad in ads if "Name" in ad)
            if len(names) != 1:
                raise RuntimeError(f"collector knows schedds {names}: set HTCondorSchedd to one of them")
            name = names[0]
        self._located = name
        self._location = collector.locate(htcondor2.DaemonTypes.Schedd, name)
        self._schedd = htcondor2.Schedd(self._location)
        return self._schedd

    async def _call(self, what: str, fn: Callable[[], T], *, timeout: float | None = None) -> T:
        self.calls[what] = self.calls.get(what, 0) + 1
        log.debug("htcondor call %s", what)
        loop = asyncio.get_running_loop()

        def run() -> T:
            self._apply_params()
            return fn()

        future = loop.run_in_executor(self._executor, run)
        waited = asyncio.wait_for(future, timeout or self.config.command_timeout)
        try:
            return await tracing.traced(f"htcondor {what}", waited)  # a span per binding call when tracing is on
        except TimeoutError as exc:
            self._schedd = None
            raise BackendUnavailable("htcondor", f"schedd {self.schedd_name}: {what}", "timed out") from exc

    def _unavailable(self, what: str, exc: Exception) -> BackendUnavailable:
        self._schedd = None  # locate again next time (the schedd may have moved or restarted)
        return BackendUnavailable("htcondor", f"schedd {self.schedd_name}: {what}", str(exc) or type(exc).__name__)

    async def schedd_call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(schedd)``; any failure is BackendUnavailable."""

        def run() -> T:
            return fn(self._locate())

        try:
            return await self._call(what, run)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise self._unavailable(what, exc) from exc

    # --- the calls the backend makes ---------------------------------------------------------

    async def identity(self) -> str:
        """The user the schedd maps this client to, as it writes it in a job's Owner (a WRITE ping)."""

        def run() -> str:
            import htcondor2

            self._locate()
            where = self._location
            if where is None:
                where = htcondor2.Collector().locate(htcondor2.DaemonTypes.Schedd)
            # authenticated as for a submit: a pool that allows anonymous WRITE would answer "unauthenticated"
            before = htcondor2.param.get("SEC_CLIENT_AUTHENTICATION")
            htcondor2.param["SEC_CLIENT_AUTHENTICATION"] = "REQUIRED"
            try:
                answer = htcondor2.ping(where, "WRITE")
            finally:
                if before is None:
                    del htcondor2.param["SEC_CLIENT_AUTHENTICATION"]
                else:
                    htcondor2.param["SEC_CLIENT_AUTHENTICATION"] = before
            return str(answer.get("MyRemoteUserName", "")).split("@", 1)[0]

        try:
            return await self._call("ping", run)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise self._unavailable("ping", exc) from exc

    async def query(self, constraint: str, projection: Sequence[str]) -> list[dict[str, Any]]:
        return await self.schedd_call(
            "query", lambda s: [dict(ad) for ad in s.query(constraint, list(projection))]
        )

    async def history(self, constraint: str, projection: Sequence[str], match: int) -> list[dict[str, Any]]:
        return await self.schedd_call(
            "history", lambda s: [dict(ad) for ad in s.history(constraint, list(projection), match=match)]
        )

    async def act(self, action: str, job_ids: Sequence[str], reason: str) -> dict[str, Any]:
        import htcondor2

        kind = getattr(htcondor2.JobAction, action)
        # htcondor2 25 keeps a reason only when given as (text, code)
        why: Any = (reason, 0)
        return await self.schedd_call(action.lower(), lambda s: dict(s.act(kind, list(job_ids), why)))

    async def retrieve(self, job_ids: Sequence[str]) -> None:
        await self.schedd_call("retrieve", lambda s: s.retrieve(list(job_ids)))

    async def submit(self, description: Mapping[str, str], *, spool: bool) -> str:
        """Submit one job (and spool its inputs); SubmitRejected when the schedd refuses it."""
        import htcondor2

        def run(schedd: Any) -> str:
            submit = htcondor2.Submit(dict(description))
            result = schedd.submit(submit, spool=spool)
            job_id = f"{result.cluster()}.{result.first_proc()}"
            if spool:
                try:
                    schedd.spool(result)
                except Exception as exc:
                    raise _SpoolFailed(job_id, str(exc)) from exc
            return job_id

        try:
            return await self._call("submit", lambda: run(self._locate()))
        except BackendUnavailable:
            raise
        except _SpoolFailed as exc:
            # the schedd removes a job whose spooling failed by itself
            raise SubmitRejected(f"spooling the input files of job {exc.job_id} failed: {exc.detail}") from exc
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            if not _REFUSED.search(text) or "AUTHENTICATE" in text or "SECMAN" in text:
                raise self._unavailable("submit", exc) from exc
            raise SubmitRejected(f"schedd {self.schedd_name} refused the job: {text}") from exc

    async def startd_ads(self, projection: Sequence[str]) -> list[dict[str, Any]]:
        import htcondor2

        what = f"collector {self.settings.htcondor_collector or '(local)'}: startd query"

        def run() -> list[dict[str, Any]]:
            collector = htcondor2.Collector(self.settings.htcondor_collector or None)
            return [dict(ad) for ad in collector.query(htcondor2.AdTypes.Startd, projection=list(projection))]

        try:
            return await self._call("startd-query", run)
        except BackendUnavailable as exc:
            raise BackendUnavailable("htcondor", what, exc.detail) from exc
        except Exception as exc:
            raise BackendUnavailable("htcondor", what, str(exc) or type(exc).__name__) from exc

    def tool_env(self) -> dict[str, str]:
        return security.tool_environment(self.params)

    def token_dir(self) -> Path:
        return self._token_dir


class _SpoolFailed(Exception):
    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(detail)
        self.job_id = job_id
        self.detail = detail
