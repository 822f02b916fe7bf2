"""HTCondor client configuration from the plugin config: collector, authentication, extra knobs.

The same settings go to the bindings (``htcondor2.param``) and, as ``_condor_<KNOB>`` environment
entries, to the tail command, so both authenticate the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from interlink_plugins.config import Config
from interlink_plugins.core.errors import ConfigError
from interlink_plugins.htcondor.settings import HTCondorSettings


def client_params(config: Config, token_dir: Path | None = None) -> dict[str, str]:
    """HTCondor configuration knobs for the client side. ``token_dir``: where the IDTOKENS token is copied."""
    settings = config.section(HTCondorSettings)
    params: dict[str, str] = {"ENABLE_IPV6": "False"} if settings.htcondor_collector.startswith("127.") else {}
    if settings.htcondor_collector:
        params["COLLECTOR_HOST"] = settings.htcondor_collector
    methods = settings.htcondor_auth
    if methods:
        params["SEC_CLIENT_AUTHENTICATION_METHODS"] = ", ".join(methods)
        params["SEC_DEFAULT_AUTHENTICATION_METHODS"] = ", ".join(methods)
    if "IDTOKENS" in methods and settings.htcondor_token_file:
        if token_dir is None:
            raise ConfigError("HTCondorTokenFile: no directory to install the token in")
        params["SEC_TOKEN_DIRECTORY"] = str(token_dir)
    if "SCITOKENS" in methods:
        if not settings.htcondor_token_file:
            raise ConfigError("HTCondorAuth: SCITOKENS needs HTCondorTokenFile (the SciToken)")
        params["SCITOKENS_FILE"] = settings.htcondor_token_file
    if "SSL" in methods:
        if not settings.htcondor_ca_file:
            raise ConfigError("HTCondorAuth: SSL needs HTCondorCAFile (the CA that signed the daemons' certificates)")
        params["AUTH_SSL_CLIENT_CAFILE"] = settings.htcondor_ca_file
        if bool(settings.htcondor_cert_file) != bool(settings.htcondor_key_file):
            raise ConfigError("HTCondorCertFile and HTCondorKeyFile: give both or neither")
        if settings.htcondor_cert_file:
            params["AUTH_SSL_CLIENT_CERTFILE"] = settings.htcondor_cert_file
            params["AUTH_SSL_CLIENT_KEYFILE"] = settings.htcondor_key_file
    params.update(settings.htcondor_params)
    return params


def tool_environment(params: dict[str, str]) -> dict[str, str]:
    """The same settings for an HTCondor command-line tool."""
    return {f"_condor_{key}": value for key, value in params.items()}


def install_token(source: str, token_dir: Path) -> bool:
    """Copy the token into a private directory (HTCondor reads regular files there, not symlinks).

    Returns True when the copy changed (new sessions must then authenticate with it).
    """
    token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(token_dir, 0o700)
    target = token_dir / "token"
    try:
        new = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"HTCondorTokenFile: cannot read {source}: {exc.strerror}") from exc
    if target.exists() and target.read_bytes() == new:
        return False
    tmp = token_dir / ".token.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(new)
    shutil.move(tmp, target)
    return True
