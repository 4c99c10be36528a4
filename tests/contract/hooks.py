"""schemathesis hooks of the contract test (loaded with SCHEMATHESIS_HOOKS=hooks).

1. Path segments are sent the way registry clients (docker, containerd, skopeo) send them: ':' and '@' stay
literal (RFC 3986 allows both unencoded in a path segment: `pchar`), so a digest is `sha256:...`, not
`sha256%3A...`. Schemathesis percent-encodes every reserved character of a path parameter; the server
decodes both forms alike (run.sh checks the encoded form separately), and the literal form is what real
clients send, so that is what the generated requests exercise.

2. The server under test talks to whatever upstream a request names: the `ns` query parameter, or an in-path
host (a first name component with '.' or ':' or equal to 'localhost'). Schemathesis generates such hosts at
random, and the spec's examples name the test upstream as 127.0.0.1:5000. So that every request reaches the
one upstream of the test (on loopback) and nothing else, a valid host in either place is replaced with
CONTRACT_UPSTREAM before the request is sent. Malformed hosts (also numeric tricks such as `127.1` and ports
`0` or with leading zeros) are left alone: the server must reject them with 400 without contacting anything. (run.sh also points the server's HTTP(S)_PROXY at a loopback trap, so
even a host this hook missed could not leave the machine: it would fail the run.)

3. Docker schema 1 manifests (application/vnd.docker.distribution.manifest.v1+prettyjws) are JSON; a
deserializer lets response_schema_conformance check them like the other manifest types.
"""

import json
import os
import re
from urllib.parse import quote, unquote

import schemathesis

UPSTREAM = os.environ["CONTRACT_UPSTREAM"]

_LABEL = re.compile(r"[A-Za-z0-9-]+")


def _looks_numeric(name):
    """Every label decimal digits or 0x-hex: some address parser would read the name as a number."""
    return all(
        (label.isascii() and label.isdigit())
        or (label[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in label[2:]))
        for label in name.split(".")
    )


def _is_canonical_ipv4(name):
    parts = name.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and int(p) <= 255 and str(int(p)) == p for p in parts
    )


def is_valid_host(host):
    """route::normalize_host's rules: DNS labels joined by '.', at most 253 characters, optional :PORT (1-65535,
    no leading zeros); a name made of numeric labels only as a canonical dotted-quad IPv4 address."""
    name, _, port = host.rpartition(":") if ":" in host else (host, "", None)
    name_ok = (
        0 < len(name) <= 253
        and name.isascii()
        and all(
            label and _LABEL.fullmatch(label) and not label.startswith("-") and not label.endswith("-")
            for label in name.split(".")
        )
    )
    numeric_ok = name_ok and (not _looks_numeric(name) or _is_canonical_ipv4(name))
    port_ok = port is None or (
        0 < len(port) <= 5 and port.isascii() and port.isdigit() and not port.startswith("0") and int(port) <= 65535
    )
    return name_ok and numeric_ok and port_ok


def looks_like_host(component):
    return "." in component or ":" in component or component == "localhost"


# The first of several name parameters: /v2/{namespace}/{name}/... and /v2/{registry}/{namespace}/{name}/...
_FIRST_OF_SEVERAL = re.compile(r"^/v2/\{(\w+)\}/\{\w+\}/")


def literal_pchars(value):
    """A percent-encoded path segment with ':' and '@' decoded again ('.'/'..' stay encoded)."""
    if not isinstance(value, str):
        return value
    decoded = unquote(value)
    if decoded in (".", ".."):
        return value
    return quote(decoded, safe=":@")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path_parameters:
        params = case.path_parameters
        match = _FIRST_OF_SEVERAL.match(case.operation.path)
        if match:
            first = match.group(1)
            value = params.get(first)
            if isinstance(value, str):
                decoded = unquote(value)
                if looks_like_host(decoded) and is_valid_host(decoded):
                    params[first] = UPSTREAM
        for name in list(params):
            params[name] = literal_pchars(params[name])
    if case.query:
        ns = case.query.get("ns")
        if isinstance(ns, str) and is_valid_host(ns):
            case.query["ns"] = UPSTREAM


@schemathesis.deserializer("application/vnd.docker.distribution.manifest.v1+prettyjws")
def docker_schema1(context, response):
    """Docker schema 1 manifests are JSON (with an embedded JWS signature)."""
    return json.loads(response.content)
