"""Run a kubelet-parity case against a plugin over HTTP, the way interLink 0.6.2 drives it.

For each Pod or Job of the case: /create with the body interLink sends (tests/kubelet/resolve.py),
/status polled and turned into the pod phase by interLink's rule (tests/kubelet/vkphase.py), a
Job's controller making a new pod after a failed one while its backoffLimit allows, /getLogs
checked with vk-test-set's operators, and /delete at the end (a Follow stream opened before it
for the checks that look at what a deletion prints). Like vk-test-set: a pod that fails when it
should not fails the case at once; anything else is retried until the case's timeout.
"""

from __future__ import annotations

import contextlib
import copy
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.kubelet.cases import Case, LogCheck, StatusCheck
from tests.kubelet.resolve import PodTemplate, pods_from_manifests
from tests.kubelet.vkphase import VKPod, vk_pod_for
from tests.podfactory import log_request


class CaseFailure(AssertionError):
    pass


class _NotYet(Exception):
    pass


@dataclass
class Tracked:
    """One Pod or Job of a case and the pods made for it so far (a Job: one per attempt)."""

    template: PodTemplate
    bodies: list[dict[str, Any]] = field(default_factory=list)
    vk: list[VKPod] = field(default_factory=list)
    last_status: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        return self.bodies[-1]

    @property
    def pod(self) -> VKPod:
        return self.vk[-1]


@dataclass
class CaseResult:
    case: str
    ok: bool
    seconds: float
    detail: str = ""
    phases: dict[str, str] = field(default_factory=dict)


def match_log(check: LogCheck, log: str) -> str | None:
    """None when the check holds on ``log``, else why not (vk-test-set's regex operators)."""
    matches = re.findall(check.regex, log, re.MULTILINE)
    count = len(matches)
    if check.operator == "Exists" and count == 0:
        return f"{check.regex!r} not in the log"
    if check.operator in ("CountAtLeast", "CountExactly") and count < int(check.value or 0):
        return f"{check.regex!r} found {count} times, want at least {check.value}"
    if check.operator in ("CountAtMost", "CountExactly") and count > int(check.value or 0):
        raise CaseFailure(f"{check.pod}/{check.container}: {check.regex!r} found {count} times, want at most "
                          f"{check.value}:\n{log[-3000:]}")
    if check.operator == "Is" and str(check.value) not in [str(m) for m in matches]:
        return f"{check.regex!r} matched {matches}, want {check.value}"
    return None


def free_port() -> int:
    """A TCP port free on this host now (the pods of SLURM and HTCondor listen on the host's network)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class CaseRun:
    def __init__(self, base_url: str, case: Case, *, poll: float = 1.0) -> None:
        self.case = case
        self.client = httpx.Client(base_url=base_url, timeout=60)
        self.poll = poll
        self.ports = {port: free_port() for port in case.host_ports}
        self.tracked = {t.name: Tracked(t) for t in pods_from_manifests(case.documents(self.ports))}
        self.follow_logs: dict[tuple[str, str], str] = {}

    # --- interLink's calls -------------------------------------------------------------------

    def _create(self, item: Tracked) -> None:
        body = item.template.body(len(item.bodies))
        response = self.client.post("/create", json=body)
        if response.status_code != 200:
            raise CaseFailure(f"/create of {body['pod']['metadata']['name']} answered {response.status_code}: "
                              f"{response.text[:2000]}")
        answer = response.json()
        if answer.get("PodUID") != body["pod"]["metadata"]["uid"]:
            raise CaseFailure(f"/create answered {answer}")
        # the VK stores PodJID in the JobID annotation: later /status and /delete carry it
        body["pod"]["metadata"]["annotations"]["JobID"] = answer.get("PodJID", "")
        item.bodies.append(body)
        item.vk.append(vk_pod_for(body))

    def _status(self, item: Tracked) -> dict[str, Any] | None:
        pod = copy.deepcopy(item.body["pod"])
        pod["status"]["phase"] = item.pod.phase
        response = self.client.request("GET", "/status", json=[pod])
        if response.status_code != 200:
            return None  # the VK logs it and asks again later
        entries = response.json()
        uid = pod["metadata"]["uid"]
        found = [e for e in entries if e.get("UID") == uid]
        return found[0] if found else None

    def _logs(self, item: Tracked, container: str) -> str:
        response = self.client.request("GET", "/getLogs", json=log_request(item.body, container))
        if response.status_code != 200:
            raise _NotYet(f"/getLogs {container}: {response.status_code} {response.text[:300]}")
        return response.text

    def _delete(self, item: Tracked) -> None:
        for body in item.bodies:
            self.client.post("/delete", json=body["pod"])

    # --- the checks ---------------------------------------------------------------------------

    def _poll_pods(self) -> None:
        for name, item in self.tracked.items():
            if item.pod.finished:
                continue
            status = self._status(item)
            if status is None:
                continue
            item.last_status = status
            item.pod.apply(status)
            want = self.case.phases.get(name)
            if item.pod.finished and item.pod.phase != want and not (
                    item.pod.phase == "Failed" and len(item.bodies) < item.template.attempts):
                # a finished pod never changes again (vk-test-set gives up at once on an unexpected failure)
                raise CaseFailure(f"pod {item.body['pod']['metadata']['name']} ended {item.pod.phase}, want {want}: "
                                  f"{status}")
            if item.pod.phase == "Failed" and len(item.bodies) < item.template.attempts:
                self._create(item)  # the Job controller makes the next pod

    def _check_phases(self) -> None:
        for name, want in self.case.phases.items():
            item = self.tracked[name]
            if item.pod.phase != want:
                raise _NotYet(f"{name} is {item.pod.phase}, want {want}")
            if want == "Failed" and len(item.bodies) < item.template.attempts:
                raise _NotYet(f"{name}: the job controller still has attempts to make")

    def _check_status(self, check: StatusCheck) -> None:
        item = self.tracked[check.pod]
        status = item.last_status or {}
        entries = status.get("initContainers" if check.init else "containers") or []
        entry = next((e for e in entries if e.get("name") == check.container), None)
        if entry is None:
            raise _NotYet(f"{check.pod}/{check.container}: no status yet")
        state = entry.get("state") or {}
        if check.state not in state:
            raise _NotYet(f"{check.pod}/{check.container}: state {state}, want {check.state}")
        if check.state == "terminated":
            code = state["terminated"].get("exitCode")
            if check.exit_code is not None and code != check.exit_code:
                raise CaseFailure(f"{check.pod}/{check.container}: exit {code}, want {check.exit_code}: {entry}")
            if check.nonzero and not code:
                raise CaseFailure(f"{check.pod}/{check.container}: exit {code}, want non-zero: {entry}")

    def _check_log(self, check: LogCheck) -> None:
        item = self.tracked[check.pod]
        log = self.follow_logs.get((check.pod, check.container), "") if check.on_delete else \
            self._logs(item, check.container)
        why = match_log(check, log)
        if why:
            raise _NotYet(f"{check.pod}/{check.container}: {why}; log:\n{log[-1500:]}")

    def _follow_through_delete(self) -> None:
        """Open a Follow stream per container checked on delete, delete the pods, read to the end."""
        wanted = {(c.pod, c.container) for c in self.case.logs if c.on_delete}
        threads = []
        for pod, container in wanted:
            item = self.tracked[pod]
            chunks: list[str] = []

            def read(item: Tracked = item, container: str = container, chunks: list[str] = chunks) -> None:
                try:
                    with self.client.stream("GET", "/getLogs", json=log_request(item.body, container, Follow=True),
                                            timeout=httpx.Timeout(60, read=60)) as response:
                        for text in response.iter_text():
                            chunks.append(text)
                except httpx.HTTPError as exc:
                    chunks.append(f"\n[follow ended: {exc}]")

            thread = threading.Thread(target=read, daemon=True)
            thread.start()
            threads.append((pod, container, thread, chunks))
        time.sleep(1.5)  # the streams have sent what was there
        for pod in {p for p, _ in wanted}:
            self._delete(self.tracked[pod])
        for pod, container, thread, chunks in threads:
            thread.join(90)
            self.follow_logs[(pod, container)] = "".join(chunks)

    def run(self) -> CaseResult:
        start = time.monotonic()
        deadline = start + self.case.timeout
        last = ""
        try:
            for item in self.tracked.values():
                self._create(item)
            while True:
                self._poll_pods()
                try:
                    self._check_phases()
                    for status_check in self.case.statuses:
                        self._check_status(status_check)
                    for log_check in self.case.logs:
                        if not log_check.on_delete:
                            self._check_log(log_check)
                    break
                except _NotYet as exc:
                    last = str(exc)
                if time.monotonic() > deadline:
                    raise CaseFailure(f"not reached within {self.case.timeout:.0f}s: {last}\n{self._phases()}")
                time.sleep(self.poll)
            if any(c.on_delete for c in self.case.logs):
                self._follow_through_delete()
                for log_check in self.case.logs:
                    if log_check.on_delete:
                        try:
                            self._check_log(log_check)
                        except _NotYet as exc:
                            raise CaseFailure(str(exc)) from None
            for job, count in self.case.attempts.items():
                made = len(self.tracked[job].bodies)
                if made != count:
                    raise CaseFailure(f"{job}: the job controller made {made} pods, want {count}")
            return CaseResult(self.case.key, True, time.monotonic() - start, phases=self._phase_map())
        except (CaseFailure, httpx.HTTPError, AssertionError) as exc:
            return CaseResult(self.case.key, False, time.monotonic() - start,
                              f"{type(exc).__name__}: {exc}\n{self._log_tails()}", self._phase_map())
        finally:
            for item in self.tracked.values():
                with contextlib.suppress(httpx.HTTPError):
                    self._delete(item)
            self.client.close()

    def _log_tails(self, lines: int = 15) -> str:
        """The end of every container's log, for a failure's report."""
        out = []
        for item in self.tracked.values():
            if not item.bodies:
                continue
            spec = item.body["pod"]["spec"]
            for c in (spec.get("initContainers") or []) + spec["containers"]:
                try:
                    text = self._logs(item, c["name"])
                except (_NotYet, httpx.HTTPError) as exc:
                    text = f"({exc})"
                tail = "\n    ".join(text.splitlines()[-lines:])
                out.append(f"  log {item.body['pod']['metadata']['name']}/{c['name']}:\n    {tail}")
        return "\n".join(out)

    def _phase_map(self) -> dict[str, str]:
        return {name: item.pod.phase for name, item in self.tracked.items() if item.vk}

    def _phases(self) -> str:
        return "\n".join(f"  {name}: {item.pod.phase if item.vk else '-'} last status {item.last_status}"
                         for name, item in self.tracked.items())
