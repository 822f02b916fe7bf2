"""What `render` shows instead of secrets.

interLink resolves env from Secrets into plain values, so the plugin cannot tell a secret env value from
another: every env value is shown as its length. Secret and projected volume contents and the registry
credentials become placeholders too. All of it is replaced before the job is rendered (a value of any
length, unlike a search-and-replace of the output); a last text mask catches any longer secret that
would still reach the output by another way.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from interlink_plugins.config import Config
from interlink_plugins.core.model.pod import Container, EnvVar, Pod

MASK = "***"
MIN_MASKED = 4  # shorter values are not searched for in the output (they would hit unrelated text)


def length_of(value: str | bytes) -> str:
    size = len(value.encode() if isinstance(value, str) else value)
    return f"<{size} bytes>"


def redacted_pod(pod: Pod) -> Pod:
    """The pod with every env value, Secret and projected value replaced by its length."""
    return dataclasses.replace(
        pod,
        init_containers=tuple(_redacted_container(c) for c in pod.init_containers),
        containers=tuple(_redacted_container(c) for c in pod.containers),
        secrets=_redacted_data(pod.secrets),
        projected=_redacted_data(pod.projected),
        raw=_redacted_raw(pod.raw),
    )


def redacted_config(config: Config) -> Config:
    """The config with the registry credentials replaced by their lengths."""
    credentials = {host: (length_of(user), length_of(password))
                   for host, (user, password) in config.registry_credentials.items()}
    return dataclasses.replace(config, registry_credentials=credentials)


def env_summary(pod: Pod) -> list[str]:
    """One comment line per container with env: names and lengths, never values."""
    return [
        f"# env {container.name}: " + ", ".join(f"{e.name} ({len(e.value.encode())} bytes)" for e in container.env)
        for container in pod.all_containers
        if container.env
    ]


def secret_values(pod: Pod, config: Config) -> list[str]:
    values = [value for data in (*pod.secrets.values(), *pod.projected.values()) for value in data.values()]
    texts = [value.decode(errors="replace") for value in values]
    texts += [word for credential in config.registry_credentials.values() for word in credential]
    return texts


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_MASKED:
            text = text.replace(secret, MASK)
    return text


def _redacted_container(container: Container) -> Container:
    return dataclasses.replace(container, env=tuple(EnvVar(env.name, length_of(env.value)) for env in container.env))


def _redacted_data(objects: Mapping[str, Mapping[str, bytes]]) -> dict[str, dict[str, bytes]]:
    return {name: {key: length_of(value).encode() for key, value in data.items()} for name, data in objects.items()}


def redacted_body(body: Any) -> Any:
    """interLink's create body as `render --body` shows it: env values as their lengths, Secret data and
    projected values (the service-account token among them) as placeholders."""
    shown = copy.deepcopy(body)
    if not isinstance(shown, dict):
        return shown
    if isinstance(shown.get("pod"), dict):
        shown["pod"] = _redacted_raw(shown["pod"])
    entries = shown.get("container")
    for entry in entries if isinstance(entries, list) else ():
        for key, placeholder in (("secrets", lambda _v: MASK), ("projectedvolumemaps", length_of)):
            for item in (entry.get(key) or []) if isinstance(entry, dict) else ():
                if isinstance(item, dict) and isinstance(item.get("data"), dict):
                    item["data"] = {k: placeholder(str(v)) for k, v in item["data"].items()}
    return shown


def _redacted_raw(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The pod JSON with env values replaced, for the code that reads the spec as sent."""
    copied: dict[str, Any] = copy.deepcopy(dict(raw))
    spec = copied.get("spec")
    for key in ("initContainers", "containers"):
        items = spec.get(key) if isinstance(spec, dict) else None
        for item in items if isinstance(items, list) else ():
            for env in (item.get("env") or []) if isinstance(item, dict) else ():
                if isinstance(env, dict) and isinstance(env.get("value"), str):
                    env["value"] = length_of(env["value"])
    return copied
