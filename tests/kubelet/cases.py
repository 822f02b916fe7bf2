"""The kubelet-parity suite: the project's own pods for every behaviour interlink-hq/vk-test-set checks.

Each :class:`Case` is a set of plain manifests (Pods, Jobs, ConfigMaps, Secrets) plus what a
kubelet would show for them: the pod phase by interLink's rule (tests/kubelet/vkphase.py) and
log regexes with vk-test-set's operators. ``covers`` names the vk-test-set templates whose
behaviour the case checks (docs/kubelet-parity.md has the table).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

REGEX_OPERATORS = ("Exists", "CountAtLeast", "CountAtMost", "CountExactly", "Is")


@dataclass(frozen=True)
class LogCheck:
    pod: str  # Pod name, or Job name (its latest pod)
    container: str
    regex: str
    operator: str = "Exists"
    value: int | str | None = None
    on_delete: bool = False  # read from a Follow stream opened before the pod is deleted


@dataclass(frozen=True)
class StatusCheck:
    """A container field the kubelet would show: ``state`` kind and, optionally, reason/exitCode."""

    pod: str
    container: str
    state: str  # waiting | running | terminated
    exit_code: int | None = None
    nonzero: bool = False
    init: bool = False


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    covers: tuple[str, ...]
    manifests: str
    phases: dict[str, str]  # pod (or Job) name -> expected phase
    logs: tuple[LogCheck, ...] = ()
    statuses: tuple[StatusCheck, ...] = ()
    timeout: float = 150
    # backend -> reason: expected to fail there today (pytest xfail, not strict)
    xfail: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # Job -> pods its controller must have made
    # ports the case's servers listen on. SLURM and HTCondor pods share the host's network, where another
    # pod may hold them (the same case run on the previous backend, still in its grace period): each run
    # replaces every value equal to one of them (containerPort, probe ports, env values) by a free port
    host_ports: tuple[int, ...] = ()

    def documents(self, ports: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
        docs = [d for d in yaml.safe_load_all(self.manifests) if d]
        return [_with_ports(d, ports) for d in docs] if ports else docs


def _with_ports(node: Any, ports: Mapping[int, int]) -> Any:
    if isinstance(node, dict):
        return {key: _with_ports(value, ports) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_ports(value, ports) for value in node]
    if isinstance(node, int) and not isinstance(node, bool) and node in ports:
        return ports[node]
    if isinstance(node, str) and node.isdigit() and int(node) in ports:
        return str(ports[int(node)])
    return node


ITEM5 = ("item 5 of the kubelet-parity issue: SLURM's own memory enforcement (runtime podman passes no "
         "--memory; the local cluster has no cgroup or OverMemoryKill)")


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": containers, **spec}}  # fmt: skip


def _docs(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)


def _script(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


HELLO = Case(
    "hello-world", "bash -c echo in an image named by its registry path", ("000",),
    _docs(_pod("hello", [{"name": "hello", "image": "ghcr.io/grycap/cowsay", "imagePullPolicy": "Always",
                          "command": ["/bin/bash", "-c"], "args": ["echo hello world"]}])),
    {"hello": "Succeeded"},
    (LogCheck("hello", "hello", r"^hello world$", "CountExactly", 1),),
)

PYTHON_ARGS = Case(
    "python-args", "multi-line python args with quotes, unicode and $", ("010",),
    _docs(_pod("python-args", [{"name": "py", "image": "python:alpine", "command": ["python", "-c"], "args": [_script(
        """
        print("special: @ò!\\"£$%&/()=?^é*ç°§ 'single' \\\\back")
        print("unicode: 🤩 ünïcödé")
        print("dollar: $HOME ${HOME} $(NOT_DEFINED) $$(ESCAPED)")
        a, b = 1, 2
        print(f"a + b = {a} + {b} = {a + b}")
        print('Completed')
        """)]}])),
    {"python-args": "Succeeded"},
    (LogCheck("python-args", "py", r"special: @ò!\"£\$%&/\(\)=\?\^é\*ç°§ 'single' \\back"),
     LogCheck("python-args", "py", r"unicode: 🤩 ünïcödé"),
     # kubernetes expansion: unknown $(VAR) stays, $$(VAR) becomes $(VAR); no shell touches $HOME
     LogCheck("python-args", "py", r"dollar: \$HOME \$\{HOME\} \$\(NOT_DEFINED\) \$\(ESCAPED\)$"),
     LogCheck("python-args", "py", r"a \+ b = 1 \+ 2 = 3"),
     LogCheck("python-args", "py", r"^Completed$")),
)

ENV_VALUE = Case(
    "env-value", "env by value, $(VAR) expansion in env values and args", ("020",),
    _docs(_pod("python-env", [{"name": "python", "image": "python:alpine", "command": ["python", "-c"],
                               "args": ["import os, sys\nfor v in ('SIMPLE', 'DERIVED'): print(v, os.environ.get(v))\n"
                                        "print('ARG', sys.argv[1])", "$(SIMPLE)-arg"],
                               "env": [{"name": "SIMPLE", "value": "simple"},
                                       {"name": "DERIVED", "value": "$(SIMPLE) and more"}]}])),
    {"python-env": "Succeeded"},
    (LogCheck("python-env", "python", r"^SIMPLE simple$"),
     LogCheck("python-env", "python", r"^DERIVED simple and more$"),
     LogCheck("python-env", "python", r"^ARG simple-arg$")),
)

SHARED_EMPTYDIR = Case(
    "shared-emptydir", "an emptyDir shared by two containers, readOnly in one", ("030",),
    _docs(_pod("shared-volume", [
        {"name": "writer", "image": "python:alpine", "command": ["python", "-c"],
         "args": ["open('/shared-vol/dump.tmp', 'w').write('Dumped contents')\n"
                  "import os; os.rename('/shared-vol/dump.tmp', '/shared-vol/dump')"],
         "volumeMounts": [{"name": "shared-vol", "mountPath": "/shared-vol"}]},
        {"name": "reader", "image": "python:alpine", "command": ["python", "-c"], "args": [_script(
            """
            import os, time
            for _ in range(600):
                if os.path.exists('/shared-vol/dump'):
                    break
                time.sleep(0.1)
            print(open('/shared-vol/dump').read())
            try:
                os.remove('/shared-vol/dump')
                print('RO mount broken: removed')
            except OSError as e:
                print('RO mount ok', e.errno)
            """)],
         "volumeMounts": [{"name": "shared-vol", "mountPath": "/shared-vol", "readOnly": True}]}],
        volumes=[{"name": "shared-vol", "emptyDir": {"sizeLimit": "500Mi"}}])),
    {"shared-volume": "Succeeded"},
    (LogCheck("shared-volume", "reader", r"^Dumped contents$"),
     LogCheck("shared-volume", "reader", r"^RO mount ok 30$")),  # EROFS
)

_CONFIG_SCRIPT = "print('hello configurable world')\nfor d in ('/shared-vol1', '/shared-vol2'):\n    open(d + '/config', 'w').write('c')\n"
_SECRET_SCRIPT = ("import os, time\nprint('hello secret world')\nfor d in ('/shared-vol1', '/shared-vol2'):\n"
                  "    open(d + '/secret', 'w').write('s')\n"
                  "for _ in range(600):\n    if os.path.exists('/shared-vol2/config'): break\n    time.sleep(0.1)\n"
                  "print('both volumes:', sorted(os.listdir('/shared-vol1')), sorted(os.listdir('/shared-vol2')))\n"
                  "print('secret mode', oct(os.stat('/secrets/secret-script.py').st_mode & 0o777))\n")
CONFIG_VOLUMES = Case(
    "config-volumes", "configMap and secret volumes with items next to two emptyDirs, any mount order", ("040",),
    _docs(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vol-config"},
         "data": {"config-map-script.py": _CONFIG_SCRIPT, "unused": "not projected"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vol-secret"}, "type": "Opaque",
         "stringData": {"secret-script.py": _SECRET_SCRIPT, "other": "not projected"}},
        _pod("config-volumes", [
            {"name": "config", "image": "python:alpine", "command": ["python", "/config-map/config-map-script.py"],
             "volumeMounts": [{"name": "shared-vol1", "mountPath": "/shared-vol1"},
                              {"name": "config-map", "mountPath": "/config-map"},
                              {"name": "shared-vol2", "mountPath": "/shared-vol2"}]},
            {"name": "secret", "image": "python:alpine", "command": ["python", "/secrets/secret-script.py"],
             "volumeMounts": [{"name": "shared-vol2", "mountPath": "/shared-vol2"},
                              {"name": "secret", "mountPath": "/secrets"},
                              {"name": "shared-vol1", "mountPath": "/shared-vol1"}]}],
            volumes=[{"name": "config-map", "configMap": {"name": "vol-config", "items": [
                         {"key": "config-map-script.py", "path": "config-map-script.py"}]}},
                     {"name": "secret", "secret": {"secretName": "vol-secret", "defaultMode": 0o400, "items": [
                         {"key": "secret-script.py", "path": "secret-script.py"}]}},
                     {"name": "shared-vol1", "emptyDir": {"sizeLimit": "50Mi"}},
                     {"name": "shared-vol2", "emptyDir": {}}])),
    {"config-volumes": "Succeeded"},
    (LogCheck("config-volumes", "config", r"^hello configurable world$"),
     LogCheck("config-volumes", "secret", r"^hello secret world$"),
     LogCheck("config-volumes", "secret", r"^both volumes: \['config', 'secret'\] \['config', 'secret'\]$"),
     LogCheck("config-volumes", "secret", r"^secret mode 0o400$")),
)

INIT_GIT = Case(
    "init-git", "an init container fills an emptyDir with a git checkout the main container lists", ("060",),
    _docs(_pod("init-git", [{"name": "lister", "image": "busybox:latest", "command": ["ls", "/interlink/"],
                             "volumeMounts": [{"name": "repo", "mountPath": "/interlink"}]}],
               initContainers=[{"name": "git-puller", "image": "bitnamilegacy/git", "command": ["sh", "-c", _script(
                   """
                   set -e
                   git init -q /tmp/origin && cd /tmp/origin
                   echo readme > README.md && git add README.md
                   git -c user.email=t@t -c user.name=t commit -qm init
                   git clone -q /tmp/origin /interlink/checkout && cp /interlink/checkout/README.md /interlink/
                   echo cloned
                   """)], "volumeMounts": [{"name": "repo", "mountPath": "/interlink"}]}],
               volumes=[{"name": "repo", "emptyDir": {"sizeLimit": "500Mi"}}])),
    {"init-git": "Succeeded"},
    (LogCheck("init-git", "git-puller", r"^cloned$"), LogCheck("init-git", "lister", r"^README\.md$")),
)

MULTI_INIT = Case(
    "multi-init", "three sequential init containers sharing a volume, checked by the main container", ("065",),
    _docs(_pod("multi-init", [
        {"name": "main-app", "image": "python:3.11-alpine", "command": ["/bin/sh", "-c"], "args": [_script(
            """
            test -f /shared/init_complete.flag || { echo 'ERROR: no flag'; exit 1; }
            cat /shared/stage.txt
            [ "$(cat /shared/stage.txt | tr '\\n' ' ')" = "init_stage=1 init_stage=2 init_stage=3 " ] \
              && echo 'stages in order' || exit 1
            grep -q validation_passed=true /shared/config.txt && echo 'configuration validated'
            python3 -c "import json; d = json.load(open('/shared/data.json')); assert len(d['users']) == 3; print('data file validated')"
            echo MULTI_INIT_TEST_PASSED
            """)], "volumeMounts": [{"name": "shared-data", "mountPath": "/shared"}]}],
        initContainers=[
            {"name": "create-config", "image": "busybox:1.36", "command": ["/bin/sh", "-c"], "args": [_script(
                """
                printf 'app_name=test\\nversion=1.0.0\\n' > /shared/config.txt
                echo init_stage=1 >> /shared/stage.txt
                echo 'Config created successfully'
                """)], "volumeMounts": [{"name": "shared-data", "mountPath": "/shared"}]},
            {"name": "validate-config", "image": "busybox:1.36", "command": ["/bin/sh", "-c"], "args": [_script(
                """
                grep -q app_name= /shared/config.txt || exit 1
                echo init_stage=2 >> /shared/stage.txt
                echo validation_passed=true >> /shared/config.txt
                echo 'Configuration validated successfully'
                """)], "volumeMounts": [{"name": "shared-data", "mountPath": "/shared"}]},
            {"name": "prepare-data", "image": "alpine:3.19", "command": ["/bin/sh", "-c"], "args": [_script(
                """
                python3 -c 'import json; json.dump({"users": ["a", "b", "c"]}, open("/shared/data.json", "w"))'
                echo init_stage=3 >> /shared/stage.txt
                echo INIT_COMPLETE > /shared/init_complete.flag
                echo 'All init containers finished successfully'
                """)], "volumeMounts": [{"name": "shared-data", "mountPath": "/shared"}]}],
        volumes=[{"name": "shared-data", "emptyDir": {"sizeLimit": "100Mi"}}])),
    {"multi-init": "Succeeded"},
    (LogCheck("multi-init", "create-config", "Config created successfully"),
     LogCheck("multi-init", "validate-config", "Configuration validated successfully"),
     LogCheck("multi-init", "prepare-data", "All init containers finished successfully"),
     LogCheck("multi-init", "main-app", "^stages in order$"),
     LogCheck("multi-init", "main-app", "^configuration validated$"),
     LogCheck("multi-init", "main-app", "^data file validated$"),
     LogCheck("multi-init", "main-app", "^MULTI_INIT_TEST_PASSED$")),
)

_ENV_REFS_SCRIPT = _script(
    """
    import os
    for v in ('APP_NAME', 'APP_VERSION', 'API_KEY', 'MY_SECRET_VAR', 'DATABASE_URL', 'AWS_DEFAULT_REGION',
              'CFG_LOG_LEVEL', 'OVERRIDDEN'):
        print(f'{v}: {os.environ.get(v, "NOT_SET")}')
    prefixed = [k for k in os.environ if k.endswith('DATABASE_URL') and k != 'DATABASE_URL']
    print('prefixed secret vars:', prefixed)
    print('Test completed')
    """)
ENV_REFS = Case(
    "env-refs", "env from configMapKeyRef, secretKeyRef (other var name) and envFrom", ("080", "085", "086"),
    _docs(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "env-config"},
         "data": {"app-name": "config-test-app", "app-version": "1.0.0", "LOG_LEVEL": "debug"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "env-secret"}, "type": "Opaque",
         "stringData": {"api-key": "secret-api-key-12345", "testfile": "hello-from-secret"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-credentials"}, "type": "Opaque",
         "stringData": {"DATABASE_URL": "postgresql://user:pass@localhost:5432/mydb", "OVERRIDDEN": "from-secret"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-credentials"}, "type": "Opaque",
         "stringData": {"AWS_DEFAULT_REGION": "us-west-2"}},
        _pod("env-refs", [{
            "name": "env", "image": "python:alpine", "command": ["python", "-c"], "args": [_ENV_REFS_SCRIPT],
            "envFrom": [{"secretRef": {"name": "app-credentials"}}, {"secretRef": {"name": "aws-credentials"}},
                        {"configMapRef": {"name": "env-config"}, "prefix": "CFG_"}],
            "env": [
                {"name": "APP_NAME", "valueFrom": {"configMapKeyRef": {"name": "env-config", "key": "app-name"}}},
                {"name": "APP_VERSION", "valueFrom": {"configMapKeyRef": {"name": "env-config", "key": "app-version"}}},
                {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "api-key"}}},
                {"name": "MY_SECRET_VAR", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "testfile"}}},
                {"name": "OVERRIDDEN", "value": "env-wins"}]}])),
    {"env-refs": "Succeeded"},
    (LogCheck("env-refs", "env", "^APP_NAME: config-test-app$"),
     LogCheck("env-refs", "env", "^APP_VERSION: 1.0.0$"),
     LogCheck("env-refs", "env", "^API_KEY: secret-api-key-12345$"),
     LogCheck("env-refs", "env", "^MY_SECRET_VAR: hello-from-secret$"),
     LogCheck("env-refs", "env", "^DATABASE_URL: postgresql://user:pass@localhost:5432/mydb$"),
     LogCheck("env-refs", "env", "^AWS_DEFAULT_REGION: us-west-2$"),
     LogCheck("env-refs", "env", "^CFG_LOG_LEVEL: debug$"),
     LogCheck("env-refs", "env", "^OVERRIDDEN: env-wins$"),
     LogCheck("env-refs", "env", r"^prefixed secret vars: \[\]$"),
     LogCheck("env-refs", "env", "^Test completed$")),
)

_DOWNWARD_SCRIPT = _script(
    """
    import os
    for v in ('POD_NAME', 'POD_NAMESPACE', 'NODE_NAME', 'CONFIG_VALUE'):
        print(f'{v}: {os.environ.get(v, "NOT_SET")}')
    print('POD_UID length:', len(os.environ.get('POD_UID', '')))
    print('Volume pod-name:', open('/downward/pod-name').read())
    print('Volume labels:', open('/downward/labels').read().replace(chr(10), ' '))
    print('Config file:', open('/config/app-config.yaml').read().splitlines()[1].strip())
    print('Secret database-url:', open('/secrets/database-url').read())
    print('Test completed')
    """)
DOWNWARD = Case(
    "downward-api", "downwardAPI env (fieldRef) and a downwardAPI volume, configMap and secret volumes",
    ("080-downward",),
    _docs(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "downward-config"},
         "data": {"app-config.yaml": "app:\n  name: \"downward-api-test\"\n"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "downward-secret"}, "type": "Opaque",
         "stringData": {"database-url": "postgresql://user:pass@db:5432/testdb"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "downward-api", "labels": {"app": "downward", "tier": "x"}},
         "spec": {"restartPolicy": "Never", "containers": [{
             "name": "downward", "image": "python:alpine", "command": ["python", "-c"], "args": [_DOWNWARD_SCRIPT],
             "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                     {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                     {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                     {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                     {"name": "CONFIG_VALUE", "valueFrom": {"configMapKeyRef": {"name": "downward-config",
                                                                               "key": "app-config.yaml"}}}],
             "volumeMounts": [{"name": "downward", "mountPath": "/downward"},
                              {"name": "config-volume", "mountPath": "/config"},
                              {"name": "secret-volume", "mountPath": "/secrets"}]}],
             "volumes": [{"name": "downward", "downwardAPI": {"items": [
                             {"path": "pod-name", "fieldRef": {"fieldPath": "metadata.name"}},
                             {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                         {"name": "config-volume", "configMap": {"name": "downward-config"}},
                         {"name": "secret-volume", "secret": {"secretName": "downward-secret"}}]}}),
    {"downward-api": "Succeeded"},
    (LogCheck("downward-api", "downward", "^POD_NAME: downward-api$"),
     LogCheck("downward-api", "downward", "^POD_NAMESPACE: default$"),
     LogCheck("downward-api", "downward", "^NODE_NAME: virtual-kubelet$"),
     LogCheck("downward-api", "downward", "^CONFIG_VALUE: app:$"),
     LogCheck("downward-api", "downward", "^POD_UID length: 36$"),
     LogCheck("downward-api", "downward", "^Volume pod-name: downward-api$"),
     LogCheck("downward-api", "downward", r'^Volume labels: app="downward" tier="x" $'),
     LogCheck("downward-api", "downward", r'^Config file: name: "downward-api-test"$'),
     LogCheck("downward-api", "downward", "^Secret database-url: postgresql://user:pass@db:5432/testdb$"),
     LogCheck("downward-api", "downward", "^Test completed$")),
)

_PROBE_SERVER = _script(
    """
    import http.server, os, signal, time
    start = time.time()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            up = time.time() - start
            if self.path == '/startup':
                code, what = (200, 'Startup probe: OK') if up > 3 else (503, 'Startup probe: starting')
            elif self.path == '/healthz':
                code, what = 200, 'Liveness probe: OK'
            elif self.path == '/ready':
                code, what = (200, 'Readiness probe: Ready') if up > 5 else (503, 'Readiness probe: Not ready')
            else:
                code, what = 404, 'unknown path ' + self.path
            self.send_response(code)
            self.end_headers()
            print(f'{what} (after {up:.1f}s, agent {self.headers.get("User-Agent")})', flush=True)
        def log_message(self, *args):
            pass
    # PID 1 ignores SIGTERM unless it handles it: exit at once on delete, the host port is free again
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    port = int(os.environ['PROBE_PORT'])
    print(f'Starting HTTP server on port {port}', flush=True)
    http.server.ThreadingHTTPServer(('', port), H).serve_forever()
    """)
PROBES = Case(
    "probes", "httpGet startup, liveness and readiness probes reach a server in the container", ("090",),
    _docs(_pod("probes", [{
        "name": "probe-test", "image": "python:3.11-alpine", "command": ["python3", "-c"], "args": [_PROBE_SERVER],
        "env": [{"name": "PROBE_PORT", "value": "8080"}], "ports": [{"containerPort": 8080}],
        "startupProbe": {"httpGet": {"path": "/startup", "port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        "resources": {"limits": {"memory": "128Mi", "cpu": "200m"}, "requests": {"memory": "64Mi", "cpu": "100m"}}}])),
    {"probes": "Running"},
    (LogCheck("probes", "probe-test", r"Starting HTTP server on port \d+"),
     LogCheck("probes", "probe-test", "Startup probe: OK"),
     LogCheck("probes", "probe-test", "Liveness probe: OK"),
     LogCheck("probes", "probe-test", "Readiness probe: Ready"),
     # startup gates the others: no liveness or readiness check arrives before the startup probe passed
     LogCheck("probes", "probe-test", r"(?s)(Liveness|Readiness) probe.*Startup probe: OK", "CountExactly", 0)),
    timeout=80,
    host_ports=(8080,),
)

_DEFAULT_CMD_ARGS = ["python3", "-c", "import sys; print(f'Python {sys.version}'); print('Default command test completed')"]
DEFAULT_ENTRYPOINT = Case(
    "default-entrypoint", "no command (image CMD), args only (image ENTRYPOINT), command only", ("095",),
    _docs(
        _pod("default-entrypoint", [
            {"name": "busybox-default", "image": "busybox:1.36"},
            {"name": "echo-with-args", "image": "busybox:1.36", "args": ["sh", "-c", "echo 'Args only test passed'"]},
            {"name": "alpine-default", "image": "alpine:3.19"},
            {"name": "git-entrypoint", "image": "bitnamilegacy/git", "args": ["version"]}]),
        _pod("default-cmd-workload", [{"name": "python-version", "image": "python:3.11-alpine",
                                       "args": _DEFAULT_CMD_ARGS}]),
        _pod("entrypoint-only", [{"name": "nginx-version", "image": "nginx:alpine", "command": ["nginx"],
                                  "args": ["-v"]}]),
        _pod("command-only", [{"name": "git-command", "image": "bitnamilegacy/git", "command": ["git", "--version"]}])),
    {"default-entrypoint": "Succeeded", "default-cmd-workload": "Succeeded", "entrypoint-only": "Succeeded",
     "command-only": "Succeeded"},
    (LogCheck("default-entrypoint", "echo-with-args", "^Args only test passed$"),
     LogCheck("default-entrypoint", "git-entrypoint", r"^git version \d"),  # ENTRYPOINT git + args
     LogCheck("default-cmd-workload", "python-version", r"^Python 3\.11"),
     LogCheck("default-cmd-workload", "python-version", "^Default command test completed$"),
     LogCheck("entrypoint-only", "nginx-version", "nginx version"),
     LogCheck("command-only", "git-command", r"^git version \d")),
    statuses=(StatusCheck("default-entrypoint", "busybox-default", "terminated", exit_code=0),
              StatusCheck("default-entrypoint", "alpine-default", "terminated", exit_code=0)),
)

_OOM = _script(
    """
    print('Attempting to allocate memory beyond limit...', flush=True)
    data = b'x' * (400 * 1024 * 1024)
    print('Allocated 400MB: the limit was not enforced', flush=True)
    """)
FAILING = Case(
    "failing-containers", "exit 42, command not found, a python exception, one of three failing, memory over the limit",
    ("100",),
    _docs(
        _pod("exit-code-failure", [{"name": "exit-failure", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                                    "args": ["echo 'ERROR: Simulated application failure'; echo 'Exit code: 42'; exit 42"]}]),
        _pod("command-not-found", [{"name": "missing-command", "image": "busybox:1.36",
                                    "command": ["nonexistent-command"], "args": ["--flag", "value"]}]),
        _pod("runtime-error", [{"name": "python-exception", "image": "python:3.11-alpine", "command": ["python", "-c"],
                                "args": ["print('About to raise')\nraise RuntimeError('Simulated application error: "
                                         "database connection failed')"]}]),
        _pod("partial-fail", [
            {"name": "success-container", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
             "args": ["sleep 2; echo 'Container 1: Completed successfully'"]},
            {"name": "failure-container", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
             "args": ["sleep 1; echo 'Container 2: ERROR - Simulating failure'; exit 1"]},
            {"name": "another-success", "image": "alpine:3.19", "command": ["/bin/sh", "-c"],
             "args": ["sleep 3; echo 'Container 3: Completed successfully'"]}])),
    {"exit-code-failure": "Failed", "command-not-found": "Failed", "runtime-error": "Failed", "partial-fail": "Failed"},
    (LogCheck("exit-code-failure", "exit-failure", "Simulated application failure"),
     LogCheck("exit-code-failure", "exit-failure", "Exit code: 42"),
     LogCheck("runtime-error", "python-exception", "RuntimeError.*database connection failed"),
     LogCheck("partial-fail", "success-container", "Container 1: Completed successfully"),
     LogCheck("partial-fail", "failure-container", "Container 2: ERROR - Simulating failure"),
     LogCheck("partial-fail", "another-success", "Container 3: Completed successfully")),
    statuses=(StatusCheck("exit-code-failure", "exit-failure", "terminated", exit_code=42),
              StatusCheck("command-not-found", "missing-command", "terminated", nonzero=True),
              StatusCheck("runtime-error", "python-exception", "terminated", exit_code=1),
              StatusCheck("partial-fail", "success-container", "terminated", exit_code=0),
              StatusCheck("partial-fail", "failure-container", "terminated", exit_code=1),
              StatusCheck("partial-fail", "another-success", "terminated", exit_code=0)),
)

MEMORY_LIMIT = Case(
    "memory-limit", "a container over its memory limit is killed (OOMKilled, 137)", ("100", "050"),
    _docs(_pod("memory-limit", [{"name": "memory-hog", "image": "python:3.11-alpine", "command": ["python3", "-c"],
                                 "args": [_OOM], "resources": {"limits": {"memory": "50Mi", "cpu": "100m"},
                                                              "requests": {"memory": "20Mi", "cpu": "50m"}}}])),
    {"memory-limit": "Failed"},
    (LogCheck("memory-limit", "memory-hog", "Attempting to allocate memory beyond limit"),
     LogCheck("memory-limit", "memory-hog", "the limit was not enforced", "CountExactly", 0)),
    statuses=(StatusCheck("memory-limit", "memory-hog", "terminated", exit_code=137),),
    xfail={"slurm": ITEM5, "htcondor": "the test pool runs jobs without cgroups (CGROUP_MEMORY_LIMIT_POLICY none, "
                                       "rootless podman on cgroup v1): nothing enforces a memory limit there"},
)

_QUOTE_VALUES = {
    "SINGLE_QUOTES": "It's a beautiful day",
    "DOUBLE_QUOTES": 'He said "hello world"',
    "MIXED_QUOTES": "She said \"It's working!\"",
    "JSON_STRING": '{"name": "test", "value": "123"}',
    "SHELL_COMMAND": "echo 'Hello' && echo \"World\" ; $(id) `id`",
    "ESCAPED_DOUBLE": 'This is a \\"quoted\\" word',
    "ESCAPED_SINGLE": "This is a \\'quoted\\' word",
    "BOTH_QUOTE_TYPES": "Both \"double\" and 'single' quotes",
    "EMPTY_STRING": "",
    "SPACES_ONLY": "   ",
    "QUOTES_ONLY_SINGLE": "'''",
    "QUOTES_ONLY_DOUBLE": '"""',
    "PATH_WITH_QUOTES": '/path/to/"some file"/directory',
    "SQL_QUERY": "SELECT * FROM users WHERE name = 'John'",
    "BACKTICKS": "Run `command` here",
    "NEWLINE_WITH_QUOTES": "Line 1\nLine 2 with 'quotes'\nLine 3\n",
    "SPECIAL_CHARS": "Value with @#$%^&*() and 'quotes' \\ \t tab",
    "LEADING_DASH": "--not-an-option",
}
_QUOTES_SCRIPT = _script(
    """
    import json, os, sys
    expected = json.loads(sys.argv[1])
    failed = [k for k, v in expected.items() if os.environ.get(k) != v]
    for k in expected:
        print(f'Testing: {k}', 'PASS' if k not in failed else f'FAIL {os.environ.get(k)!r}')
    assert json.loads(os.environ['JSON_STRING']) == {'name': 'test', 'value': '123'}
    print('JSON parsing successful')
    print('ENV_QUOTES_TEST_PASSED' if not failed else f'ENV_QUOTES_TEST_FAILED {failed}')
    sys.exit(1 if failed else 0)
    """)
ENV_QUOTES = Case(
    "env-quotes", "env values with every quoting shape reach the process byte for byte", ("105",),
    _docs(_pod("env-quotes", [{
        "name": "quote-tester", "image": "python:3.11-alpine", "command": ["python", "-c"],
        "args": [_QUOTES_SCRIPT, json.dumps(_QUOTE_VALUES)],
        "env": [{"name": k, "value": v} for k, v in _QUOTE_VALUES.items()]}])),
    {"env-quotes": "Succeeded"},
    (LogCheck("env-quotes", "quote-tester", "^ENV_QUOTES_TEST_PASSED$"),
     LogCheck("env-quotes", "quote-tester", "^Testing: .* PASS$", "CountExactly", len(_QUOTE_VALUES)),
     LogCheck("env-quotes", "quote-tester", "^JSON parsing successful$")),
)


def _job(name: str, containers: list[dict[str, Any]], backoff: int = 0, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff, "template": {"metadata": {"labels": {"app": "failed-job-test"}},
                     "spec": {"restartPolicy": "Never", "containers": containers, **spec}}}}  # fmt: skip


FAILED_JOBS = Case(
    "failed-jobs", "failed Jobs (exit, exception, multi-container, retries) and init container failures",
    ("110", "120-init"),
    _docs(
        _job("job-exit-code-fail", [{"name": "exit-failure", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                                     "args": ["echo 'ERROR: Application failed with exit code 1'; exit 1"]}]),
        _job("job-python-exception", [{"name": "python-crash", "image": "python:3.11-alpine", "command": ["python", "-c"],
                                       "args": ["raise Exception('Simulated job failure: database connection failed')"]}]),
        _job("job-multi-container-fail", [
            {"name": "success-sidecar", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
             "args": ["sleep 2; echo 'Sidecar: Completed successfully'"]},
            {"name": "main-app", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
             "args": ["echo 'Main: Encountered critical error'; exit 1"]}]),
        _job("job-with-retries", [{"name": "retry-failure", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                                   "args": ["echo \"Attempt started in $HOSTNAME\"; exit 1"]}], backoff=2),
        _job("job-init-container-fail", [{"name": "main-container", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                                          "args": ["echo 'Main: This should never run'"]}],
             initContainers=[{"name": "failing-init", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                              "args": ["echo 'Init: ERROR - Initialization failed'; exit 1"]}]),
        _pod("failing-init", [{"name": "main", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                               "args": ["echo MAIN_CONTAINER_EXECUTED"]}],
             initContainers=[{"name": "failing-init", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                              "args": ["echo 'Init container will fail now'; exit 3"]},
                             {"name": "never-init", "image": "busybox:1.36", "command": ["/bin/sh", "-c"],
                              "args": ["echo SECOND_INIT_EXECUTED"]}])),
    {"job-exit-code-fail": "Failed", "job-python-exception": "Failed", "job-multi-container-fail": "Failed",
     "job-with-retries": "Failed", "job-init-container-fail": "Failed", "failing-init": "Failed"},
    (LogCheck("job-exit-code-fail", "exit-failure", "ERROR: Application failed with exit code 1"),
     LogCheck("job-python-exception", "python-crash", "Exception.*database connection failed"),
     LogCheck("job-multi-container-fail", "success-sidecar", "Sidecar: Completed successfully"),
     LogCheck("job-multi-container-fail", "main-app", "Main: Encountered critical error"),
     LogCheck("job-with-retries", "retry-failure", "Attempt started"),
     LogCheck("job-init-container-fail", "failing-init", "Init: ERROR - Initialization failed"),
     LogCheck("failing-init", "failing-init", "Init container will fail now")),
    statuses=(StatusCheck("job-init-container-fail", "failing-init", "terminated", exit_code=1, init=True),
              StatusCheck("job-init-container-fail", "main-container", "terminated", nonzero=True),
              StatusCheck("failing-init", "failing-init", "terminated", exit_code=3, init=True),
              StatusCheck("failing-init", "never-init", "terminated", nonzero=True, init=True),
              StatusCheck("failing-init", "main", "terminated", nonzero=True)),
    attempts={"job-with-retries": 3, "job-exit-code-fail": 1},
    timeout=240,
)

_HOOKED = _script(
    """
    trap 'echo "TERM received; preStop marker: $(cat /tmp/prestop-marker 2>/dev/null || echo none)"; exit 0' TERM
    echo 'Container starting...'
    i=0
    while [ ! -f /tmp/poststart-marker ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    [ -f /tmp/poststart-marker ] || { echo 'ERROR: postStart hook marker not found'; exit 1; }
    echo "postStart marker content: $(cat /tmp/poststart-marker)"
    echo 'Main container process running...'
    while :; do sleep 0.2; done
    """)
HOOKS = Case(
    "lifecycle-hooks", "postStart exec hook before the process is seen running; preStop exec hook on delete", ("115",),
    _docs(_pod("lifecycle-hooks", [{
        "name": "lifecycle-test", "image": "python:3.11-alpine", "command": ["/bin/sh", "-c"], "args": [_HOOKED],
        "lifecycle": {
            "postStart": {"exec": {"command": ["/bin/sh", "-c", "echo 'postStart hook executed!' > /tmp/poststart-marker"]}},
            "preStop": {"exec": {"command": ["/bin/sh", "-c",
                                             "echo 'preStop hook executed!' > /proc/1/fd/1; "
                                             "echo done > /tmp/prestop-marker"]}}},
        "resources": {"limits": {"memory": "128Mi", "cpu": "200m"}}}], terminationGracePeriodSeconds=10)),
    {"lifecycle-hooks": "Running"},
    (LogCheck("lifecycle-hooks", "lifecycle-test", r"Container starting\.\.\."),
     LogCheck("lifecycle-hooks", "lifecycle-test", "postStart marker content: postStart hook executed!"),
     LogCheck("lifecycle-hooks", "lifecycle-test", r"Main container process running\.\.\."),
     LogCheck("lifecycle-hooks", "lifecycle-test", "preStop hook executed!", on_delete=True),
     LogCheck("lifecycle-hooks", "lifecycle-test", "TERM received; preStop marker: done", on_delete=True)),
    timeout=80,
)

_PEM = ("-----BEGIN CERTIFICATE-----\nMIICpDCCAYwCCQDU+pQ4pHgSpDANBgkqhkiG9w0BAQsFADAUMRIwEAYDVQQDDAls\n"
        "b2NhbGhvc3QwHhcNMjMwMTAxMDAwMDAwWhcNMjQwMTAxMDAwMDAwWjAUMRIwEAYD\nAgMBAAEwDQYJKoZIhvcNAQELBQADggEBAA==\n"
        "-----END CERTIFICATE-----\n")
_PROJECTED_SCRIPT = _script(
    """
    lines = open('/projected/multiline.txt').read().splitlines()
    assert lines == ['line one', 'line two', 'line three'], lines
    print('projected ConfigMap multiline.txt: newlines preserved correctly')
    pem = open('/projected/cert-like.pem').read()
    assert pem == PEM, repr(pem)
    print('projected ConfigMap cert-like.pem: PEM format preserved correctly')
    ca = open('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt').read()
    assert ca.startswith('-----BEGIN CERTIFICATE-----\\n') and ca.endswith('-----END CERTIFICATE-----\\n'), repr(ca)
    print(f'service account ca.crt: newlines preserved ({len(ca.splitlines())} lines)')
    token = open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()
    ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()
    print('token parts:', len(token.split('.')), 'namespace:', ns)
    print('All projected volume newline tests passed')
    """)
PROJECTED = Case(
    "projected-volumes", "a projected configMap with multi-line and PEM files, the service-account ca.crt", ("120",),
    _docs(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "projected-config"},
         "data": {"multiline.txt": "line one\nline two\nline three\n", "cert-like.pem": _PEM}},
        _pod("projected-vol", [{
            "name": "check-newlines", "image": "python:alpine", "command": ["python", "-c"],
            "args": [f"PEM = {_PEM!r}\n" + _PROJECTED_SCRIPT],
            "volumeMounts": [{"name": "projected-config", "mountPath": "/projected"}]}],
            volumes=[{"name": "projected-config", "projected": {"sources": [{"configMap": {"name": "projected-config"}}]}}])),
    {"projected-vol": "Succeeded"},
    (LogCheck("projected-vol", "check-newlines", r"multiline\.txt: newlines preserved correctly"),
     LogCheck("projected-vol", "check-newlines", r"cert-like\.pem: PEM format preserved correctly"),
     LogCheck("projected-vol", "check-newlines", r"service account ca\.crt: newlines preserved \(6 lines\)"),
     LogCheck("projected-vol", "check-newlines", "^token parts: 3 namespace: default$"),
     LogCheck("projected-vol", "check-newlines", "All projected volume newline tests passed")),
)

CASES: tuple[Case, ...] = (
    HELLO, PYTHON_ARGS, ENV_VALUE, SHARED_EMPTYDIR, CONFIG_VOLUMES, INIT_GIT, MULTI_INIT, ENV_REFS, DOWNWARD, PROBES,
    DEFAULT_ENTRYPOINT, FAILING, MEMORY_LIMIT, ENV_QUOTES, FAILED_JOBS, HOOKS, PROJECTED,
)
