"""OpenAPI descriptions of the request bodies the routes read themselves (the wire contract, §2).

The routes parse raw JSON (core.model.pod names Kubernetes field paths in every error), so these schemas only
document: they describe what the parser checks, plus what Kubernetes itself guarantees of a pod (a name is
a DNS subdomain, a container has an image), and every optional field may be null, as Go serialises empty
lists. tests/e2e/test_schemathesis.py fuzzes every backend with them.
"""

from __future__ import annotations

from typing import Any

from interlink_plugins.api.models import ErrorResponse, LogRequestBody
from interlink_plugins.core.model.names import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, UID_PATTERN
from interlink_plugins.core.model.pod import PULL_POLICIES, RESTART_POLICIES
from interlink_plugins.core.model.quantity import QUANTITY_RE

Schema = dict[str, Any]

QUANTITY_PATTERN = QUANTITY_RE.pattern.replace("(?P<", "(?<")  # ECMA-262 named groups, as JSON Schema

STRING: Schema = {"type": "string"}
STRING_LIST: Schema = {"type": "array", "items": STRING}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
ANY_OBJECT: Schema = {"type": "object"}
QUANTITY: Schema = {"anyOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number", "minimum": 0}],
                    "description": "a Kubernetes quantity, at most 2^63-1"}
DNS_LABEL: Schema = {"type": "string", "pattern": DNS_LABEL_PATTERN}
UID: Schema = {"type": "string", "pattern": UID_PATTERN}
DNS_SUBDOMAIN: Schema = {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN_PATTERN}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema] | None = None, optional: dict[str, Schema] | None = None) -> Schema:
    """An object of known keys (others are allowed: a newer Kubernetes adds fields); optional ones may be null."""
    required = required or {}
    properties = {**required, **{key: nullable(value) for key, value in (optional or {}).items()}}
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def list_of(item: Schema) -> Schema:
    return {"type": "array", "items": item}


ENV_VAR = obj({"name": {"type": "string", "minLength": 1}}, {"value": STRING})
VOLUME_MOUNT = obj({"name": {"type": "string", "minLength": 1}, "mountPath": {"type": "string", "pattern": "^/"}},
                   {"readOnly": {"type": "boolean"}, "subPath": STRING})
# Kubernetes' resource names: the standard ones, or an extended resource under a domain
RESOURCE_NAME: Schema = {
    "type": "string",
    "pattern": r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMGTPE]i?|[a-z0-9.-]+/[A-Za-z0-9._-]+)$",
}
RESOURCE_LIST: Schema = {"type": "object", "propertyNames": RESOURCE_NAME, "additionalProperties": QUANTITY}
RESOURCES = obj(optional={"limits": RESOURCE_LIST, "requests": RESOURCE_LIST})
CONTAINER = obj(
    {"name": DNS_LABEL, "image": {"type": "string", "minLength": 1}},  # Kubernetes requires an image
    {"command": STRING_LIST, "args": STRING_LIST, "workingDir": STRING, "env": list_of(ENV_VAR),
     "resources": RESOURCES, "volumeMounts": list_of(VOLUME_MOUNT), "imagePullPolicy": {"enum": list(PULL_POLICIES)},
     "ports": list_of(obj(optional={"containerPort": {"type": "integer", "minimum": 1}})),
     "securityContext": ANY_OBJECT, "lifecycle": ANY_OBJECT},
)
VOLUME = obj({"name": {"type": "string", "minLength": 1}},
             {"emptyDir": ANY_OBJECT, "configMap": ANY_OBJECT, "secret": ANY_OBJECT, "projected": ANY_OBJECT,
              "hostPath": ANY_OBJECT, "downwardAPI": ANY_OBJECT})
METADATA = obj({"uid": {"type": "string", "minLength": 1}},
               {"name": STRING, "namespace": STRING, "annotations": STRING_MAP, "labels": STRING_MAP})
POD = obj(
    {"metadata": obj({"uid": UID, "name": DNS_SUBDOMAIN},
                     {"namespace": {"anyOf": [DNS_LABEL, {"const": ""}]}, "annotations": STRING_MAP,
                      "labels": STRING_MAP}),
     "spec": obj({"containers": {"type": "array", "items": CONTAINER, "minItems": 1}},
                 {"initContainers": list_of(CONTAINER), "volumes": list_of(VOLUME),
                  "restartPolicy": {"enum": list(RESTART_POLICIES)},
                  "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                  "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "securityContext": ANY_OBJECT})},
    {"status": ANY_OBJECT},
)
# /status and /delete name a pod by its uid: the rest of the v1.Pod is read only when present
POD_REF = obj({"metadata": METADATA}, {"spec": ANY_OBJECT, "status": ANY_OBJECT})
OBJECT_DATA = obj(optional={"metadata": obj(optional={"name": STRING}), "data": STRING_MAP})
RETRIEVED_POD_DATA = obj(
    {"pod": POD},
    {"container": list_of(obj(optional={"name": STRING, "configMaps": list_of(OBJECT_DATA),
                                        "secrets": list_of(OBJECT_DATA),
                                        "projectedvolumemaps": list_of(OBJECT_DATA)})),
     "jobConfig": ANY_OBJECT, "jobScript": STRING},
)


def _body(schema: Schema, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


# content given, not a model: FastAPI would document a model under the route's own media type (text/plain)
ERROR: dict[str, Any] = {"content": {"application/json": {"schema": ErrorResponse.model_json_schema()}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**ERROR, "description": "not JSON, or not the shape of the body"},
    403: {**ERROR, "description": "refused by the site policy; `field` names what"},
    413: {**ERROR, "description": "body larger than the limit"},
    422: {**ERROR, "description": "a field the plugin refuses; `field` names it"},
    503: {**ERROR, "description": "the backend is unreachable"},
}

CREATE = _body({"anyOf": [RETRIEVED_POD_DATA, {"type": "array", "items": RETRIEVED_POD_DATA, "minItems": 1,
                                               "maxItems": 1}]},
               "interLink's RetrievedPodData (>=0.5), or a one-element array of it (<=0.4)")
STATUS = _body({"anyOf": [{"type": "array", "items": POD_REF}, POD_REF]},
               "v1.Pods to report on (`[]` is the ping, answered with the node's resources); one pod alone is taken "
               "as an array of one")
DELETE = _body({"anyOf": [POD_REF, {"type": "array", "items": POD_REF, "minItems": 1, "maxItems": 1}]},
               "the v1.Pod to delete (idempotent)")
def _inlined(schema: Schema) -> Schema:
    """A pydantic schema with its $defs put in place (a route's openapi_extra cannot add components)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: Schema = walk(schema)
    return result


LOGS = _body(_inlined(LogRequestBody.model_json_schema()), "interLink's LogStruct")
