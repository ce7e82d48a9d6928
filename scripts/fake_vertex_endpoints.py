"""A fake Vertex AI ``EndpointService`` for the fake Vertex AI server (``scripts/fake_vertex.py``).

Served on the same gRPC port as the fake JobService, with the aiplatform client's own proto-plus
messages, so the Google provider's ``EndpointServiceHook`` (through
:class:`airflow_retrain.hooks.vertex_ai.VertexEndpointHook`) talks to it unchanged. What the GPU teardown
sweep needs, and no more:

* ``CreateEndpoint``, ``GetEndpoint``, ``ListEndpoints`` (``labels.KEY="VALUE" AND ...`` filters, pages),
  ``DeleteEndpoint``;
* ``UpdateEndpoint`` of ``labels`` (and ``display_name``), honouring ``etag`` like the API: an update
  carrying a stale etag fails ``ABORTED``, so a read-modify-write of the labels is a compare-and-set;
  every update gives the endpoint a new etag;
* ``DeployModel`` (dedicated resources: machine type, accelerators, replicas) and ``UndeployModel``;
  like the API, a model still receiving traffic is undeployed only when the request's ``traffic_split``
  moves its traffic away (or it is the last one), and an endpoint with deployed models cannot be deleted
  (``FAILED_PRECONDITION``).

Long-running methods answer an operation that is already done (``done=True`` with its response), so
clients never poll ``google.longrunning.Operations``.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

SERVICE = "google.cloud.aiplatform.v1.EndpointService"
_FILTER_TERM = re.compile(r'^labels\.([a-z0-9_-]+)\s*=\s*"?([^"]*)"?$')


def _now() -> datetime:
    return datetime.now(UTC)


def _types():
    from google.cloud.aiplatform_v1.types import endpoint, endpoint_service

    return endpoint, endpoint_service


def _parse_label_filter(text: str) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for term in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _FILTER_TERM.match(term.strip())
        if not match:
            raise ValueError(f"unsupported filter term {term!r} (the fake supports labels.KEY=\"VALUE\" AND ...)")
        wanted[match.group(1)] = match.group(2)
    return wanted


class FakeEndpoints:
    """Endpoints in memory, keyed by resource name (``projects/P/locations/L/endpoints/ID``)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._endpoints: dict[str, Any] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self._endpoints.clear()
            self.calls = {}

    def names(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def set_create_time(self, name: str, when: datetime) -> None:
        """Backdate an endpoint (tests: an endpoint created hours ago)."""
        with self._lock:
            self._endpoints[name].create_time = when

    def generic_handler(self):
        import grpc
        from google.longrunning import operations_pb2

        endpoint, service = _types()
        op = operations_pb2.Operation.SerializeToString

        def unary(method, request_type, response_serializer):
            return grpc.unary_unary_rpc_method_handler(method, request_type.deserialize, response_serializer)

        handlers = {
            "CreateEndpoint": unary(self._create, service.CreateEndpointRequest, op),
            "GetEndpoint": unary(self._get, service.GetEndpointRequest, endpoint.Endpoint.serialize),
            "ListEndpoints": unary(self._list, service.ListEndpointsRequest, service.ListEndpointsResponse.serialize),
            "UpdateEndpoint": unary(self._update, service.UpdateEndpointRequest, endpoint.Endpoint.serialize),
            "DeleteEndpoint": unary(self._delete, service.DeleteEndpointRequest, op),
            "DeployModel": unary(self._deploy, service.DeployModelRequest, op),
            "UndeployModel": unary(self._undeploy, service.UndeployModelRequest, op),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # -- helpers -------------------------------------------------------------------------------------
    def _count(self, method: str) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    @staticmethod
    def _done(name: str, response: Any = None):
        """A finished long-running operation carrying ``response`` (a proto-plus message or None)."""
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2, empty_pb2

        packed = any_pb2.Any()
        packed.Pack(type(response).pb(response) if response is not None else empty_pb2.Empty())
        return operations_pb2.Operation(name=f"{name}/operations/{uuid.uuid4().int % 10**12}", done=True, response=packed)

    def _copy(self, ep):
        endpoint, _ = _types()
        return endpoint.Endpoint.deserialize(endpoint.Endpoint.serialize(ep))

    def _touch(self, ep) -> None:
        ep.update_time = _now()
        ep.etag = uuid.uuid4().hex

    def _find(self, name: str, context):
        import grpc

        ep = self._endpoints.get(name)
        if ep is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Endpoint {name} is not found.")
        return ep

    # -- handlers ------------------------------------------------------------------------------------
    def _create(self, request, context):
        import grpc

        self._count("CreateEndpoint")
        endpoint, _ = _types()
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+", request.parent):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid parent {request.parent!r}")
        ep = endpoint.Endpoint(request.endpoint)
        ep.name = f"{request.parent}/endpoints/{request.endpoint_id or str(uuid.uuid4().int)[:19]}"
        ep.create_time = _now()
        self._touch(ep)
        with self._lock:
            if ep.name in self._endpoints:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Endpoint {ep.name} already exists.")
            self._endpoints[ep.name] = ep
            return self._done(ep.name, self._copy(ep))

    def _get(self, request, context):
        self._count("GetEndpoint")
        with self._lock:
            return self._copy(self._find(request.name, context))

    def _list(self, request, context):
        import grpc

        self._count("ListEndpoints")
        _, service = _types()
        try:
            wanted = _parse_label_filter(request.filter)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with self._lock:
            found = [
                self._copy(ep)
                for name, ep in self._endpoints.items()
                if name.startswith(request.parent + "/") and all(ep.labels.get(k) == v for k, v in wanted.items())
            ]
        found.sort(key=lambda ep: ep.create_time)
        start, size = int(request.page_token or 0), request.page_size or 100
        token = str(start + size) if start + size < len(found) else ""
        return service.ListEndpointsResponse(endpoints=found[start : start + size], next_page_token=token)

    def _update(self, request, context):
        import grpc

        self._count("UpdateEndpoint")
        paths = set(request.update_mask.paths)
        if not paths or paths - {"labels", "display_name"}:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the fake updates labels and display_name, not {sorted(paths)}")
        with self._lock:
            ep = self._find(request.endpoint.name, context)
            if request.endpoint.etag and request.endpoint.etag != ep.etag:
                context.abort(grpc.StatusCode.ABORTED, f"Endpoint {ep.name}: etag mismatch, it was updated meanwhile")
            if "labels" in paths:
                ep.labels = dict(request.endpoint.labels)
            if "display_name" in paths:
                ep.display_name = request.endpoint.display_name
            self._touch(ep)
            return self._copy(ep)

    def _delete(self, request, context):
        import grpc

        self._count("DeleteEndpoint")
        with self._lock:
            ep = self._find(request.name, context)
            if ep.deployed_models:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Endpoint {ep.name} has deployed models; undeploy them before deleting the endpoint.",
                )
            del self._endpoints[request.name]
        return self._done(request.name)

    def _deploy(self, request, context):
        import grpc

        self._count("DeployModel")
        _, service = _types()
        with self._lock:
            ep = self._find(request.endpoint, context)
            model = type(request.deployed_model)(request.deployed_model)
            if not model.dedicated_resources.machine_spec.machine_type:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "deployed_model.dedicated_resources.machine_spec is required")
            model.id = model.id or str(uuid.uuid4().int)[:19]
            model.create_time = _now()
            ep.deployed_models.append(model)
            split = dict(request.traffic_split) or {model.id: 100}
            ep.traffic_split = {(model.id if k == "0" else k): v for k, v in split.items()}  # "0": this model
            self._touch(ep)
            return self._done(ep.name, service.DeployModelResponse(deployed_model=model))

    def _undeploy(self, request, context):
        import grpc

        self._count("UndeployModel")
        _, service = _types()
        with self._lock:
            ep = self._find(request.endpoint, context)
            ids = [m.id for m in ep.deployed_models]
            if request.deployed_model_id not in ids:
                context.abort(grpc.StatusCode.NOT_FOUND, f"DeployedModel {request.deployed_model_id} is not on {ep.name}.")
            split = dict(request.traffic_split) or dict(ep.traffic_split)
            others = [i for i in ids if i != request.deployed_model_id]
            if others and split.get(request.deployed_model_id, 0) > 0:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"DeployedModel {request.deployed_model_id} still receives traffic; move it in traffic_split first.",
                )
            ep.deployed_models = [m for m in ep.deployed_models if m.id != request.deployed_model_id]
            ep.traffic_split = {k: v for k, v in split.items() if k in others}
            self._touch(ep)
            return self._done(ep.name, service.UndeployModelResponse())
