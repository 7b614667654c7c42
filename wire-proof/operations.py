"""Prints a regex of the spec's operation ids that the simulated server implements.

Usage: operations.py ROUTES_RS SPEC_JSON

Reads the `ROUTES` table of backend-sim/src/http/routes.rs (`(Verb::Post, &["machine",
"allocate"], ...)`, `PARAM` for a path parameter), finds each route's operation in the Swagger
spec by method and path (`/v1/machine/{id}`), and prints `^(opA|opB|...)$` for schemathesis'
--include-operation-id-regex. Fails if a route has no operation in the spec, or if the table
cannot be found: the schemathesis step then follows ROUTES without a second list to maintain.
"""

from __future__ import annotations

import json
import re
import sys

ROUTE = re.compile(r"\(\s*Verb::(Get|Post|Delete)\s*,\s*&\[([^\]]*)\]\s*,\s*Endpoint::")
SEGMENT = re.compile(r'"([^"]*)"|(PARAM)')
PARAM = "{}"


def routes(source: str) -> list[tuple[str, tuple[str, ...]]]:
    start = source.find("const ROUTES")
    end = source.find("];", start)
    if start < 0 or end < 0:
        raise SystemExit("operations.py: no `const ROUTES` table in routes.rs")
    found = []
    for verb, segments in ROUTE.findall(source[start:end]):
        parts = tuple(literal if literal else PARAM for literal, _ in SEGMENT.findall(segments))
        found.append((verb.lower(), parts))
    if not found:
        raise SystemExit("operations.py: the ROUTES table has no routes")
    return found


def spec_operations(spec: dict) -> dict[tuple[str, tuple[str, ...]], str]:
    operations = {}
    for path, item in spec["paths"].items():
        segments = path.strip("/").split("/")
        if segments[0] != "v1":
            continue
        key_segments = tuple(PARAM if s.startswith("{") and s.endswith("}") else s for s in segments[1:])
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                operations[(method.lower(), key_segments)] = operation["operationId"]
    return operations


def main() -> None:
    routes_rs, spec_json = sys.argv[1:3]
    with open(routes_rs, encoding="utf-8") as file:
        table = routes(file.read())
    with open(spec_json, encoding="utf-8") as file:
        operations = spec_operations(json.load(file))
    ids = []
    for verb, segments in table:
        operation = operations.get((verb, segments))
        if operation is None:
            raise SystemExit(f"operations.py: {verb.upper()} /v1/{'/'.join(segments)} is not in the spec")
        ids.append(operation)
    print("^(" + "|".join(sorted(set(ids))) + ")$")


if __name__ == "__main__":
    main()
