#!/usr/bin/env python3
"""Scripted MCP client for Arbiter's MCP gateway tests, built on the official MCP Python SDK.

Usage:  .test-env/venv/bin/python tests/mcp/client.py SCRIPT.json     ("-" reads the script from stdin)

SCRIPT.json:
  {"transport": "stdio", "command": "...", "args": [...], "env": {...}, "cwd": "..."}   or
  {"transport": "http", "url": "http://127.0.0.1:PORT/mcp", "headers": {"Authorization": "Bearer ..."}}
  plus
  "steps": [ {"op": "list_tools"},
             {"op": "call_tool", "name": "read_text_file", "arguments": {"path": "..."}},
             {"op": "list_resources"}, {"op": "list_resource_templates"},
             {"op": "read_resource", "uri": "..."},
             {"op": "list_prompts"}, {"op": "get_prompt", "name": "...", "arguments": {...}},
             {"op": "ping"},
             {"op": "time_call_tool", "name": "...", "arguments": {...}, "count": N, "warmup": W},
             {"op": "concurrent_call_tool", "name": "...", "arguments": {...}, "count": N},
             {"op": "run", "argv": ["cmd", "arg", "{elicitation_id}"]} ]
  optional: "mode": "legacy" (default: the initialize handshake, 2025-11-25 and older),
                    "discover" (server/discover, the 2026-07-28 per-request envelope),
                    "auto" (discover, falling back to initialize, as the SDK's Client does);
            "timeout": seconds each request may take (default 30);
            "elicitation": "accept" | "decline" | "cancel": declare elicitation (form and URL
                    modes) and answer every elicitation/create with that action;
            "exclude_unset": true to dump only the fields the server sent. By default the SDK's
                    models also show their defaults, e.g. a 2025-11-25 tools/list result comes out
                    with "ttlMs": 0, "cacheScope": "private" that were not on the wire.

stdio: "env" is merged over this process's whole environment (the SDK alone would pass only
a few safe variables such as PATH and HOME). The server's stderr goes to this process's stderr.

Prints ONE JSON document on stdout:
  {"protocol_version": "...", "server_info": {...},
   "results": [ per step {"ok": true, "value": <result>} or
                         {"ok": false, "error": {"code": <int|null>, "message": "..."}} ]}
A result is the SDK's model dumped with model_dump(mode="json", by_alias=True, exclude_none=True).
"code" is the JSON-RPC error code of an error answer (MCPError), null for any other failure
(e.g. a result that does not validate). Over HTTP an error also carries "http_status" when the
step's last HTTP response had a status >= 400. One step's failure does not stop the next ones.
Note: the SDK's call_tool validates a successful result against the tool's outputSchema, and
when the tool was not listed yet in this session it first sends a tools/list of its own (so a
gateway sees tools/list before the first tools/call of an unlisted tool; list_tools first, or
a time_call_tool warmup, avoids that).
time_call_tool's value is {"samples_us": [...], "tool_errors": n}: the wall time in whole
microseconds of each of `count` calls made after `warmup` untimed ones (time.perf_counter_ns);
tool_errors counts timed results with isError true.
run executes argv (in another process) after replacing "{elicitation_id}" in each argument with
the elicitationId of the last elicitation received; its value is {"status": N, "stdout": "...",
"stderr": "..."}.
With "elicitation", the document also holds "elicitations" (the params of each elicitation/create
received, in order) and "notifications" (each notifications/elicitation/complete received, as
{"method": ..., "params": ...}), and every step's entry records "elicitations_before" and
"notifications_before": how many of each had arrived when the step ended.
concurrent_call_tool sends `count` identical tools/call requests at once on the one session and
waits for all; its value is {"results": [...]}, each {"ok": true, "value": <result>} or
{"ok": false, "error": {...}}, in the order the calls were started.

Exit status: 0 when the session initialized (whatever the steps did); 2 when it did not (the
error goes to stderr, and stdout gets {"protocol_version": null, "init_error": {...}, "results": []});
64 for a usage or script error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

EX_USAGE = 64
DEFAULT_TIMEOUT = 30.0

OPS = {
    "list_tools": (),
    "call_tool": ("name",),
    "list_resources": (),
    "list_resource_templates": (),
    "read_resource": ("uri",),
    "list_prompts": (),
    "get_prompt": ("name",),
    "ping": (),
    "time_call_tool": ("name",),
    "concurrent_call_tool": ("name",),
    "run": ("argv",),
}


class ScriptError(Exception):
    pass


def validate(script: Any) -> None:
    if not isinstance(script, dict):
        raise ScriptError("the script must be a JSON object")
    transport = script.get("transport")
    if transport == "stdio":
        if not isinstance(script.get("command"), str):
            raise ScriptError('stdio needs "command" (a string)')
        if not isinstance(script.get("args", []), list):
            raise ScriptError('"args" must be a list')
        env = script.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ScriptError('"env" must be an object of strings')
    elif transport == "http":
        if not isinstance(script.get("url"), str):
            raise ScriptError('http needs "url" (a string)')
        headers = script.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ScriptError('"headers" must be an object of strings')
    else:
        raise ScriptError('"transport" must be "stdio" or "http"')
    if script.get("elicitation", "accept") not in ("accept", "decline", "cancel"):
        raise ScriptError('"elicitation" must be "accept", "decline" or "cancel"')
    if script.get("mode", "legacy") not in ("legacy", "discover", "auto"):
        raise ScriptError('"mode" must be "legacy", "discover" or "auto"')
    steps = script.get("steps", [])
    if not isinstance(steps, list):
        raise ScriptError('"steps" must be a list')
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or step.get("op") not in OPS:
            raise ScriptError(f"step {i}: unknown op {step.get('op') if isinstance(step, dict) else step!r}")
        for key in OPS[step["op"]]:
            if key not in step:
                raise ScriptError(f"step {i} ({step['op']}) needs {key!r}")


EXCLUDE_UNSET = False


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=EXCLUDE_UNSET)


class HttpStatus:
    """Remembers the status of the last HTTP response, to report it with a failed step."""

    def __init__(self) -> None:
        self.last: int | None = None

    async def hook(self, response: httpx2.Response) -> None:
        self.last = response.status_code


def error_of(exc: BaseException, http: HttpStatus | None) -> dict[str, Any]:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # a task group's: report its first cause
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        err: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            err["data"] = exc.data
    else:
        err = {"code": None, "message": f"{type(exc).__name__}: {exc}"}
    if http is not None and http.last is not None and http.last >= 400:
        err["http_status"] = http.last
    return err


class Elicited:
    """What the server asked the user through elicitation, and told about it afterwards."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.requests: list[Any] = []
        self.notifications: list[Any] = []

    async def elicit(self, context: Any, params: Any) -> Any:
        from mcp import types

        self.requests.append(dump(params))
        return types.ElicitResult(action=self.action)

    async def message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if method == "notifications/elicitation/complete":
            self.notifications.append({"method": method, "params": dump(message.params)})


ELICITED: Elicited | None = None


async def run_step(session: ClientSession, step: dict[str, Any]) -> Any:
    op = step["op"]
    if op == "run":
        last = ELICITED.requests[-1].get("elicitationId", "") if ELICITED and ELICITED.requests else ""
        argv = [str(a).replace("{elicitation_id}", last) for a in step["argv"]]
        done = await anyio.run_process(argv, check=False)
        return {"status": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()}
    if op == "list_tools":
        return dump(await session.list_tools())
    if op == "call_tool":
        return dump(await session.call_tool(step["name"], step.get("arguments")))
    if op == "list_resources":
        return dump(await session.list_resources())
    if op == "list_resource_templates":
        return dump(await session.list_resource_templates())
    if op == "read_resource":
        return dump(await session.read_resource(step["uri"]))
    if op == "list_prompts":
        return dump(await session.list_prompts())
    if op == "get_prompt":
        return dump(await session.get_prompt(step["name"], step.get("arguments")))
    if op == "ping":
        return dump(await session.send_ping())
    if op == "time_call_tool":
        name, arguments = step["name"], step.get("arguments")
        for _ in range(int(step.get("warmup", 0))):
            await session.call_tool(name, arguments)
        samples: list[int] = []
        tool_errors = 0
        for _ in range(int(step.get("count", 1))):
            start = time.perf_counter_ns()
            result = await session.call_tool(name, arguments)
            samples.append((time.perf_counter_ns() - start) // 1000)
            tool_errors += bool(getattr(result, "is_error", False))
        return {"samples_us": samples, "tool_errors": tool_errors}
    if op == "concurrent_call_tool":
        name, arguments = step["name"], step.get("arguments")
        results: list[Any] = [None] * int(step.get("count", 1))

        async def one(i: int) -> None:
            try:
                results[i] = {"ok": True, "value": dump(await session.call_tool(name, arguments))}
            except Exception as exc:  # noqa: BLE001 - reported per call
                results[i] = {"ok": False, "error": error_of(exc, None)}

        async with anyio.create_task_group() as tg:
            for i in range(len(results)):
                tg.start_soon(one, i)
        return {"results": results}
    raise AssertionError(op)  # validate() admits only known ops


async def handshake(session: ClientSession, mode: str) -> None:
    if mode == "legacy":
        await session.initialize()
    elif mode == "discover":
        await session.discover()
    else:
        from mcp.client._probe import negotiate_auto  # the SDK Client's mode="auto" policy

        await negotiate_auto(session)


async def run(script: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    timeout = float(script.get("timeout", DEFAULT_TIMEOUT))
    http: HttpStatus | None = None
    out: dict[str, Any] = {"protocol_version": None, "results": []}
    initialized = False
    try:
        async with AsyncExitStack() as stack:
            if script["transport"] == "stdio":
                params = StdioServerParameters(
                    command=script["command"],
                    args=[str(a) for a in script.get("args", [])],
                    # stdio_client merges this over its few "safe" variables; pass the whole
                    # environment so the server (the gateway) sees e.g. ARBITER_AGENT_KEY.
                    env={**os.environ, **script.get("env", {})},
                    cwd=script.get("cwd"),
                )
                read, write = await stack.enter_async_context(stdio_client(params))
            else:
                http = HttpStatus()
                client = httpx2.AsyncClient(
                    headers=script.get("headers", {}),
                    timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0)),
                    trust_env=False,  # loopback tests: never through a proxy from the environment
                    event_hooks={"response": [http.hook]},
                )
                await stack.enter_async_context(client)
                read, write = await stack.enter_async_context(streamable_http_client(script["url"], http_client=client))
            global ELICITED
            callbacks: dict[str, Any] = {}
            if "elicitation" in script:
                ELICITED = Elicited(script["elicitation"])
                callbacks = {"elicitation_callback": ELICITED.elicit, "message_handler": ELICITED.message}
            session = await stack.enter_async_context(
                ClientSession(read, write, read_timeout_seconds=timeout, **callbacks)
            )
            try:
                await handshake(session, script.get("mode", "legacy"))
            except Exception as exc:  # noqa: BLE001 - reported as the init error
                out["init_error"] = error_of(exc, http)
                return out, False
            initialized = True
            out["protocol_version"] = session.protocol_version
            if session.server_info is not None:
                out["server_info"] = dump(session.server_info)
            for step in script.get("steps", []):
                if http is not None:
                    http.last = None
                try:
                    out["results"].append({"ok": True, "value": await run_step(session, step)})
                except Exception as exc:  # noqa: BLE001 - one step's failure must not stop the rest
                    out["results"].append({"ok": False, "error": error_of(exc, http)})
                if ELICITED is not None:
                    out["results"][-1]["elicitations_before"] = len(ELICITED.requests)
                    out["results"][-1]["notifications_before"] = len(ELICITED.notifications)
            if ELICITED is not None:
                out["elicitations"] = ELICITED.requests
                out["notifications"] = ELICITED.notifications
    except BaseException as exc:  # noqa: BLE001 - transport start-up or teardown failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        if not initialized:
            out.setdefault("init_error", error_of(exc, http))
            return out, False
        print(f"client.py: warning: error while closing the session: {exc!r}", file=sys.stderr)
    return out, initialized


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return EX_USAGE
    try:
        text = sys.stdin.read() if argv[1] == "-" else open(argv[1], encoding="utf-8").read()
        script = json.loads(text)
        validate(script)
    except (OSError, ValueError, ScriptError) as exc:
        print(f"client.py: bad script {argv[1]}: {exc}", file=sys.stderr)
        return EX_USAGE
    global EXCLUDE_UNSET
    EXCLUDE_UNSET = bool(script.get("exclude_unset", False))
    out, initialized = anyio.run(run, script)
    if not initialized:
        err = out.get("init_error", {})
        print(f"client.py: the MCP session did not initialize: {err.get('message')} (code {err.get('code')}"
              + (f", HTTP {err['http_status']}" if "http_status" in err else "") + ")", file=sys.stderr)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if initialized else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
