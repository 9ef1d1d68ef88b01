#!/usr/bin/env python3
"""An A2A 1.0 client agent built with the official Python SDK, a2a-sdk 1.3.0: the card resolved
with `A2ACardResolver`, clients made by `ClientFactory` (JSON-RPC transport), the credential added
by the SDK's `AuthInterceptor` or as a default header. It runs a list of steps and prints one JSON
object, so a test can drive an A2A agent (or `arbiter a2a proxy` in front of one) the way a real
agent would and check what came back.

Usage:
    python client_agent.py BASE_URL [--token T] [--auth-mode interceptor|header]
        [--card-path PATH] [--verify-jwk FILE] [--skip-card] (--steps JSON | --steps-file FILE)

Prints one JSON object to stdout:
    {"base_url": ..., "transport": "...",
     "steps": [{"op": ..., "result": ...} | {"op": ..., "events": [...]} |
               {"op": ..., "error": {"code": ..., "message": ..., "type": ..., "data"?: ...}}]}
If the card cannot be resolved, the object has an "error" and no step is run. An error whose
code is not one of A2A's (the SDK raises `JSON-RPC Error <code>: <message>`) is reported with
that code and message.

Authentication:
  --auth-mode interceptor (default): the SDK's AuthInterceptor adds `Authorization: Bearer T` to
  every call, but only if the card declares an HTTP bearer scheme; the card fetch itself is sent
  without it.
  --auth-mode header: `Authorization: Bearer T` is a default header of the shared httpx client,
  sent with the card fetch and every call.

--verify-jwk FILE verifies the card's signature (ES256) with the public JWK in FILE, as the SDK's
create_signature_verifier does; a card that does not verify is an error.
--skip-card resolves no card: only `raw` and `get_card_raw` steps work, and `raw` posts to
BASE_URL (plus the step's `path`).

Steps (a JSON list). A string value "$task" / "$context" is replaced with the last task id /
context id seen in any answer.
  {"op": "get_card"}                               the resolved card (as the SDK parsed it)
  {"op": "get_card_raw"}                           a plain GET of the card: status, headers, JSON
  {"op": "send", "text": "...", "stream": false,  send a message (stream: SendStreamingMessage,
     "task_id": "...", "context_id": "...",        else SendMessage); every event is kept
     "metadata": {...}, "message_metadata": {...}, "extra_parts": [<Part JSON>...],
     "return_immediately": false, "history_length": N, "accepted_output_modes": [...],
     "push_url": "...", "push_token": "...", "extensions": ["uri", ...]}
                                                   -> {"events": [...], "times_ms": [...]}: when
                                                   each event arrived, ms after the call began
  {"op": "time_send", "text": "quick", "count": N, "warmup": W, "message_metadata": {...}}
                                                   W untimed then N timed SendMessage calls,
                                                   one after the other on one keep-alive
                                                   connection: {"samples_us": [...], "errors": n}
  {"op": "get_task", "task_id": "$task", "history_length": N}
  {"op": "list_tasks", "context_id": "...", "status": "TASK_STATE_COMPLETED",
     "page_size": N, "page_token": "...", "include_artifacts": true, "history_length": N}
  {"op": "cancel_task", "task_id": "$task"}
  {"op": "subscribe", "task_id": "$task"}
  {"op": "create_push_config", "task_id": "$task", "url": "...", "token": "...",
     "id": "...", "auth_scheme": "Bearer", "auth_credentials": "..."}
  {"op": "get_push_config", "task_id": "$task", "id": "..."}
  {"op": "list_push_configs", "task_id": "$task"}
  {"op": "delete_push_config", "task_id": "$task", "id": "..."}
  {"op": "get_extended_card"}
  {"op": "sleep", "seconds": 1.5}
  {"op": "raw", "body": {...JSON-RPC...} | "body_text": "...", "headers": {...}, "path": "/",
     "no_version_header": false, "no_auth": false}
                                                   a POST without the SDK, from a fresh httpx
                                                   client, to the card's interface URL (or
                                                   BASE_URL + path); sends `A2A-Version: 1.0`
                                                   and the bearer token unless told not to;
                                                   collects SSE frames
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid

from typing import Any

import httpx

from google.protobuf.json_format import MessageToDict, ParseDict

from a2a.client import ClientConfig, ClientFactory
from a2a.client.auth.credentials import CredentialService
from a2a.client.auth.interceptor import AuthInterceptor
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.client import ClientCallContext
from a2a.client.service_parameters import (
    ServiceParametersFactory,
    with_a2a_extensions,
)
from a2a.types import (
    AgentCard,
    AuthenticationInfo,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP, A2AError


class StaticCredentials(CredentialService):
    def __init__(self, token: str):
        self._token = token

    async def get_credentials(self, security_scheme_name: str, context: ClientCallContext | None) -> str | None:
        return self._token


def to_dict(msg: Any) -> Any:
    return MessageToDict(msg) if msg is not None else None


# How the SDK reports a JSON-RPC error whose code is not one of A2A's (e.g. a gateway's denial).
UNMAPPED_ERROR = re.compile(r'^JSON-RPC Error (-?\d+): (.*)$', re.S)


def err_obj(e: BaseException) -> dict[str, Any]:
    code = JSON_RPC_ERROR_CODE_MAP.get(type(e)) if isinstance(e, A2AError) else None
    message = getattr(e, 'message', None) or str(e)
    m = UNMAPPED_ERROR.match(message) if code is None else None
    if m:
        code, message = int(m.group(1)), m.group(2)
    out: dict[str, Any] = {'code': code, 'message': message, 'type': type(e).__name__}
    if isinstance(e, A2AError) and e.data:
        out['data'] = e.data
    return {'error': out}


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.last_task: str | None = None
        self.last_context: str | None = None
        headers = {}
        if args.token and args.auth_mode == 'header':
            headers['Authorization'] = f'Bearer {args.token}'
        self.http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(60.0))
        self.card: AgentCard | None = None
        self.clients: dict[bool, Any] = {}

    # -- helpers -------------------------------------------------------
    def sub(self, v: Any) -> Any:
        if v == '$task':
            return self.last_task or ''
        if v == '$context':
            return self.last_context or ''
        if isinstance(v, dict):
            return {k: self.sub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.sub(x) for x in v]
        return v

    def note(self, d: Any) -> None:
        """Remember task/context ids found in a response dict."""
        if not isinstance(d, dict):
            return
        for key in ('task', 'statusUpdate', 'artifactUpdate', 'message'):
            if key in d and isinstance(d[key], dict):
                self.note(d[key])
        if 'status' in d and 'id' in d:  # a Task
            self.last_task = d['id']
        if 'taskId' in d and d.get('taskId'):
            self.last_task = d['taskId']
        if d.get('contextId'):
            self.last_context = d['contextId']

    async def setup(self) -> None:
        if self.args.skip_card:
            return
        resolver = A2ACardResolver(self.http, self.args.base_url)
        verifier = None
        if self.args.verify_jwk:
            from jwt import PyJWK

            from a2a.utils.signing import create_signature_verifier

            with open(self.args.verify_jwk) as f:
                jwk = json.load(f)
            verifier = create_signature_verifier(lambda kid, jku: PyJWK(jwk), ['ES256'])
        self.card = await resolver.get_agent_card(
            relative_card_path=self.args.card_path, signature_verifier=verifier
        )
        interceptors = []
        if self.args.token and self.args.auth_mode == 'interceptor':
            interceptors.append(AuthInterceptor(StaticCredentials(self.args.token)))
        for streaming in (True, False):
            cfg = ClientConfig(streaming=streaming, httpx_client=self.http)
            self.clients[streaming] = ClientFactory(cfg).create(self.card, interceptors=interceptors)

    def ctx(self, step: dict[str, Any]) -> ClientCallContext | None:
        if step.get('extensions'):
            return ClientCallContext(
                service_parameters=ServiceParametersFactory.create([with_a2a_extensions(step['extensions'])])
            )
        return None

    # -- ops -----------------------------------------------------------
    async def op_get_card(self, step):
        return {'result': to_dict(self.card)}

    async def op_get_card_raw(self, step):
        path = self.args.card_path or '/.well-known/agent-card.json'
        r = await self.http.get(self.args.base_url.rstrip('/') + '/' + path.lstrip('/'))
        out: dict[str, Any] = {'status': r.status_code, 'headers': dict(r.headers)}
        try:
            out['result'] = r.json() if r.content else None
        except ValueError:
            out['body_text'] = r.text
        return out

    async def op_send(self, step):
        parts = [Part(text=step.get('text', 'hello'))]
        for p in step.get('extra_parts', []):
            parts.append(ParseDict(p, Part()))
        msg = Message(
            message_id=step.get('message_id') or str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=parts,
            task_id=step.get('task_id', ''),
            context_id=step.get('context_id', ''),
        )
        if step.get('message_metadata'):
            msg.metadata.update(step['message_metadata'])
        req = SendMessageRequest(message=msg)
        if step.get('metadata'):
            req.metadata.update(step['metadata'])
        cfg = SendMessageConfiguration(
            return_immediately=bool(step.get('return_immediately', False)),
            accepted_output_modes=step.get('accepted_output_modes', []),
        )
        if 'history_length' in step:
            cfg.history_length = step['history_length']
        if step.get('push_url'):
            cfg.task_push_notification_config.CopyFrom(
                TaskPushNotificationConfig(url=step['push_url'], token=step.get('push_token', ''))
            )
        req.configuration.CopyFrom(cfg)
        client = self.clients[bool(step.get('stream', False))]
        return await self.collect(client.send_message(req, context=self.ctx(step)))

    async def collect(self, stream) -> dict[str, Any]:
        """The events of a stream, and when each arrived (ms after the call started)."""
        events, times = [], []
        t0 = time.monotonic()
        try:
            async for ev in stream:
                times.append(round((time.monotonic() - t0) * 1000))
                d = to_dict(ev)
                self.note(d)
                events.append(d)
        except Exception as e:  # noqa: BLE001
            return {'events': events, 'times_ms': times, **err_obj(e)}
        return {'events': events, 'times_ms': times}

    async def op_time_send(self, step):
        client = self.clients[False]
        count, warmup = int(step.get('count', 100)), int(step.get('warmup', 10))
        samples, errors = [], 0
        for i in range(warmup + count):
            msg = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=step.get('text', 'quick'))])
            if step.get('message_metadata'):
                msg.metadata.update(step['message_metadata'])
            req = SendMessageRequest(message=msg)
            t0 = time.perf_counter_ns()
            try:
                async for _ in client.send_message(req):
                    pass
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) // 1000)
        return {'result': {'samples_us': samples, 'errors': errors}}

    async def op_get_task(self, step):
        req = GetTaskRequest(id=step.get('task_id', ''))
        if 'history_length' in step:
            req.history_length = step['history_length']
        d = to_dict(await self.clients[True].get_task(req, context=self.ctx(step)))
        self.note(d)
        return {'result': d}

    async def op_list_tasks(self, step):
        req = ListTasksRequest()
        if step.get('context_id'):
            req.context_id = step['context_id']
        if step.get('status'):
            req.status = TaskState.Value(step['status'])
        for k in ('page_size', 'history_length'):
            if k in step:
                setattr(req, k, step[k])
        if step.get('page_token'):
            req.page_token = step['page_token']
        if 'include_artifacts' in step:
            req.include_artifacts = step['include_artifacts']
        return {'result': to_dict(await self.clients[True].list_tasks(req, context=self.ctx(step)))}

    async def op_cancel_task(self, step):
        d = to_dict(await self.clients[True].cancel_task(CancelTaskRequest(id=step.get('task_id', '')), context=self.ctx(step)))
        self.note(d)
        return {'result': d}

    async def op_subscribe(self, step):
        req = SubscribeToTaskRequest(id=step.get('task_id', ''))
        return await self.collect(self.clients[True].subscribe(req, context=self.ctx(step)))

    async def op_create_push_config(self, step):
        cfg = TaskPushNotificationConfig(
            task_id=step.get('task_id', ''), url=step.get('url', ''), token=step.get('token', ''), id=step.get('id', '')
        )
        if step.get('auth_scheme'):
            cfg.authentication.CopyFrom(
                AuthenticationInfo(scheme=step['auth_scheme'], credentials=step.get('auth_credentials', ''))
            )
        return {'result': to_dict(await self.clients[True].create_task_push_notification_config(cfg, context=self.ctx(step)))}

    async def op_get_push_config(self, step):
        req = GetTaskPushNotificationConfigRequest(task_id=step.get('task_id', ''), id=step.get('id', ''))
        return {'result': to_dict(await self.clients[True].get_task_push_notification_config(req, context=self.ctx(step)))}

    async def op_list_push_configs(self, step):
        req = ListTaskPushNotificationConfigsRequest(task_id=step.get('task_id', ''))
        return {'result': to_dict(await self.clients[True].list_task_push_notification_configs(req, context=self.ctx(step)))}

    async def op_delete_push_config(self, step):
        req = DeleteTaskPushNotificationConfigRequest(task_id=step.get('task_id', ''), id=step.get('id', ''))
        await self.clients[True].delete_task_push_notification_config(req, context=self.ctx(step))
        return {'result': None}

    async def op_get_extended_card(self, step):
        return {'result': to_dict(await self.clients[True].get_extended_agent_card(GetExtendedAgentCardRequest(), context=self.ctx(step)))}

    async def op_sleep(self, step):
        await asyncio.sleep(float(step.get('seconds', 1)))
        return {'result': None}

    async def op_raw(self, step):
        url = self.card.supported_interfaces[0].url if self.card and self.card.supported_interfaces else self.args.base_url
        if step.get('path'):
            url = self.args.base_url.rstrip('/') + '/' + step['path'].lstrip('/')
        # A fresh httpx client: only the headers listed here are sent.
        headers = {'Content-Type': 'application/json'}
        if not step.get('no_version_header'):
            headers['A2A-Version'] = '1.0'
        if self.args.token and not step.get('no_auth'):
            headers['Authorization'] = f'Bearer {self.args.token}'
        headers.update(step.get('headers', {}))
        content = step['body_text'].encode() if 'body_text' in step else json.dumps(step.get('body')).encode()
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(timeout=60) as raw_http, raw_http.stream('POST', url, content=content, headers=headers) as r:
            out['status'] = r.status_code
            out['content_type'] = r.headers.get('content-type')
            if 'text/event-stream' in (r.headers.get('content-type') or ''):
                frames, cur = [], {}
                async for line in r.aiter_lines():
                    if line == '':
                        if cur:
                            if 'data' in cur:
                                try:
                                    cur['data'] = json.loads(cur['data'])
                                except ValueError:
                                    pass
                            frames.append(cur)
                            self.note((cur.get('data') or {}).get('result') if isinstance(cur.get('data'), dict) else None)
                        cur = {}
                        continue
                    k, _, v = line.partition(':')
                    v = v[1:] if v.startswith(' ') else v
                    cur[k] = (cur[k] + '\n' + v) if k in cur else v
                out['sse'] = frames
            else:
                body = await r.aread()
                try:
                    out['result'] = json.loads(body) if body else None
                    if isinstance(out['result'], dict):
                        self.note(out['result'].get('result'))
                except ValueError:
                    out['body_text'] = body.decode(errors='replace')
        return out

    async def run(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {'base_url': self.args.base_url, 'steps': []}
        try:
            await self.setup()
        except Exception as e:  # noqa: BLE001
            out.update(err_obj(e))
            await self.http.aclose()
            return out
        if self.clients:
            out['transport'] = type(self.clients[True]._transport).__name__  # noqa: SLF001
        for raw_step in steps:
            step = self.sub(raw_step)
            rec: dict[str, Any] = {'op': step.get('op')}
            fn = getattr(self, 'op_' + str(step.get('op')), None)
            if fn is None:
                rec['error'] = {'code': None, 'message': f'unknown op {step.get("op")}', 'type': 'HarnessError'}
            else:
                try:
                    rec.update(await fn(step))
                except Exception as e:  # noqa: BLE001
                    rec.update(err_obj(e))
            out['steps'].append(rec)
        for c in self.clients.values():
            await c.close()
        await self.http.aclose()
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('base_url')
    ap.add_argument('--token')
    ap.add_argument('--auth-mode', choices=['interceptor', 'header'], default='interceptor')
    ap.add_argument('--card-path')
    ap.add_argument('--verify-jwk')
    ap.add_argument('--skip-card', action='store_true')
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--steps')
    g.add_argument('--steps-file')
    args = ap.parse_args()
    if args.steps_file:
        steps = json.load(open(args.steps_file))
    elif args.steps:
        steps = json.loads(args.steps)
    else:
        steps = [{'op': 'get_card'}, {'op': 'send', 'text': 'hello'}]
    result = asyncio.run(Runner(args).run(steps))
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
