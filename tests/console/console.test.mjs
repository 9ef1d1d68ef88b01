// The web console in a real browser: playwright-core driving Debian's chromium (headless)
// against a running `arbiter serve` with real decisions. Plain node, no test runner:
// prints one line per step and exits 1 with the step that failed and why.
//
// crates/arbiter-cli/tests/console.rs starts the server and runs this with:
//   ARBITER_URL             http://127.0.0.1:PORT of `arbiter serve`
//   ARBITER_ADMIN_TOKEN     an administrator's token (arbadm_…)
//   ARBITER_AUDITOR_TOKEN   an auditor's token
//   ARBITER_AGENT           the registered agent (quickstart: support-bot)
//   ARBITER_AGENT_KEY       its key (arb_…), for AuthZEN evaluations
//   ARBITER_AGENT_KEY_ID    the key's id (key_…), revoked from the console
//   ARBITER_AGENT_KEY2      a second key of the agent, rotated from the console
//   ARBITER_AGENT_KEY2_ID   its id
//   ARBITER_GAP_MCP_CONFIG  the MCP client configuration serve reads for the gap map
//                           (--gap-mcp-config FILE=AGENT); rewritten here to wrap its server
//   ARBITER_BIN             the arbiter binary (named in the wrapped configuration)
//   ARBITER_SCREENSHOTS     where the screenshots go (created)
//   ARBITER_CHROMIUM        the browser (default /usr/bin/chromium)
//   ARBITER_PLAYWRIGHT      playwright-core's directory (default
//                           $ARBITER_TEST_ENV/console-node/node_modules/playwright-core, as
//                           scripts/test-deps installs it)
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') {
    console.error(`console.test: ${name} is not set (see the top of ${path.basename(fileURLToPath(import.meta.url))})`);
    process.exit(2);
  }
  return v;
};
const URL_ = env('ARBITER_URL').replace(/\/$/, '');
const ADMIN = env('ARBITER_ADMIN_TOKEN');
const AUDITOR = env('ARBITER_AUDITOR_TOKEN');
const AGENT = env('ARBITER_AGENT');
const KEY = env('ARBITER_AGENT_KEY');
const KEY_ID = env('ARBITER_AGENT_KEY_ID');
const KEY2 = env('ARBITER_AGENT_KEY2');
const KEY2_ID = env('ARBITER_AGENT_KEY2_ID');
const GAP_CONFIG = env('ARBITER_GAP_MCP_CONFIG');
const ARBITER_BIN = env('ARBITER_BIN');
const SHOTS = env('ARBITER_SCREENSHOTS');
const CHROMIUM = env('ARBITER_CHROMIUM', '/usr/bin/chromium');
const testEnv = process.env.ARBITER_TEST_ENV || path.join(here, '../../.test-env');
const PW = env('ARBITER_PLAYWRIGHT', path.join(testEnv, 'console-node/node_modules/playwright-core'));

if (!existsSync(CHROMIUM)) {
  console.error(`console.test: no browser at ${CHROMIUM} (scripts/system-deps installs Debian's chromium)`);
  process.exit(2);
}
if (!existsSync(path.join(PW, 'index.mjs'))) {
  console.error(`console.test: playwright-core is not installed at ${PW} (run scripts/test-deps)`);
  process.exit(2);
}
const { chromium } = await import(pathToFileURL(path.join(PW, 'index.mjs')).href);
mkdirSync(SHOTS, { recursive: true });

const started = Date.now();
const T = 15_000; // longest wait for one thing to appear
let step = 'starting';
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const problems = []; // page errors, CSP violations

async function evaluate(action, key = KEY) {
  const res = await fetch(`${URL_}/access/v1/evaluation`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ action: { name: "call_tool" }, resource: { type: "Tool", id: `helpdesk/${action}` } }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `AuthZEN evaluation answered ${res.status}: ${text}`);
  return JSON.parse(text);
}

function watch(page, who) {
  page.on('pageerror', (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const t = m.text();
    // The expected refusals (401 after logout, 403 for the auditor and CSRF) are logged by
    // the browser as failed loads; anything else (a CSP violation, a script error) is a bug.
    if (/Failed to load resource: the server responded with a status of (401|403)/.test(t)) return;
    problems.push(`${who}: console error: ${t}`);
  });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(context, token, who) {
  const page = await context.newPage();
  watch(page, who);
  await page.goto(`${URL_}/console/`);
  const field = page.locator('#token');
  await field.waitFor({ timeout: T });
  assert.equal(await field.getAttribute('type'), 'password');
  assert.equal(await field.getAttribute('autocomplete'), 'off');
  await field.fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('main h1', { hasText: 'Overview' }).waitFor({ timeout: T });
  return page;
}

async function go(page, hash, heading) {
  await page.goto(`${URL_}/console/${hash}`);
  await page.locator('main h1', { hasText: heading }).waitFor({ timeout: T });
}

/** No error notice on the page (an API call that failed shows one). */
async function noErrorShown(page, where) {
  const errs = await page.locator('main .notice.error').allTextContents();
  assert.deepEqual(errs, [], `${where} shows an error`);
}

/** fetch() from inside the page, with its cookie; returns {status, body}. */
function pageFetch(page, method, url, headers = {}) {
  return page.evaluate(async ([m, u, h]) => {
    const r = await fetch(u, { method: m, headers: h, credentials: 'same-origin' });
    const text = await r.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    // Errors are {"error": {"code", "message"}}: `code` and `message` at the top for the checks.
    if (body && typeof body === 'object' && body.error && typeof body.error === 'object') body = { ...body, ...body.error };
    return { status: r.status, body };
  }, [method, url, headers]);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
let failed = null;
try {
  const admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });

  step = 'the sign-in page';
  {
    const p = await admin.newPage();
    watch(p, 'sign-in');
    await p.goto(`${URL_}/console/`);
    await p.locator('#token').waitFor({ timeout: T });
    // A wrong token is refused with the server's message, and no session starts.
    await p.locator('#token').fill('arbadm_wrong');
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.locator('main .notice.error').waitFor({ timeout: T });
    await shot(p, '01-sign-in-refused');
    await p.close();
    log('sign-in page: password field, a wrong token refused with the server\'s message');
  }

  step = 'signing in as the administrator';
  const page = await signIn(admin, ADMIN, 'admin');
  await page.locator('#who-name', { hasText: '(administrator)' }).waitFor({ timeout: T });
  await page.locator('main svg[role="img"]').first().waitFor({ timeout: T });
  await noErrorShown(page, 'the overview');
  await shot(page, '02-overview');
  // Keyboard: on a fresh load the first Tab reaches the skip link, which moves focus to main.
  await page.reload();
  await page.locator('main h1', { hasText: 'Overview' }).waitFor({ timeout: T });
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'main');
  log('signed in; overview shows the chart and the log health; Tab reaches the skip link first');

  step = 'a decision arrives live';
  await go(page, '#/decisions', 'Decisions');
  await page.locator('#live-status', { hasText: 'Live: new decisions' }).waitFor({ timeout: T });
  await page.locator('#decision-rows[data-loaded="true"]').waitFor({ state: 'attached', timeout: T });
  const before = await page.locator('#decision-rows tr').count();
  assert.ok(before >= 5, `the decisions page lists ${before} of the decisions made before it opened`);
  const live = await evaluate('read_ticket');
  assert.equal(live.decision, true, `read_ticket should be allowed: ${JSON.stringify(live)}`);
  const id = live.context.decision_id;
  const row = page.locator(`#decision-rows tr[data-decision-id="${id}"]`);
  await row.waitFor({ timeout: T });
  assert.match(await row.textContent(), /allow/);
  assert.equal(await page.locator('#decision-rows tr').first().getAttribute('data-decision-id'), id, 'the live decision is not at the top');
  await shot(page, '03-decisions-live');
  assert.equal(await page.locator('#decision-rows tr').count(), before + 1);
  log(`decision ${id} arrived live at the top of the table (above the ${before} found by the search)`);

  step = 'searching decisions';
  const denied = await evaluate('delete_ticket');
  assert.equal(denied.decision, false);
  await go(page, `#/decisions?agent=${encodeURIComponent(AGENT)}&outcome=deny`, 'Decisions');
  await page.locator('#decision-rows[data-loaded="true"]').waitFor({ state: 'attached', timeout: T });
  await page.locator(`#decision-rows tr[data-decision-id="${denied.context.decision_id}"]`).waitFor({ timeout: T });
  const outcomes = await page.locator('#decision-rows tr td:nth-child(5)').allTextContents();
  assert.ok(outcomes.length > 0 && outcomes.every((o) => /deny/.test(o)), `a search for denials shows ${outcomes}`);
  assert.equal(await page.locator('select[name="outcome"]').inputValue(), 'deny');
  log(`search by agent and outcome: ${outcomes.length} denial(s)`);

  step = 'the decision detail page verifies its proof';
  await go(page, '#/decisions', 'Decisions');
  await page.locator(`#decision-rows tr[data-decision-id="${id}"] a`).click();
  await page.locator('main h1', { hasText: `Decision ${id}` }).waitFor({ timeout: T });
  const verdict = page.locator('#proof-verdict');
  await verdict.filter({ hasText: /proof (NOT )?verified/ }).waitFor({ timeout: T });
  assert.equal((await verdict.textContent()).trim(), '✓ proof verified');
  const detail = await page.locator('main').textContent();
  for (const want of ['reason (shown to the caller)', 'reason (for administrators)', 'policy version', 'determining policies', 'enforcement point', 'Request context']) {
    assert.ok(detail.includes(want), `the detail page does not show ${want}`);
  }
  await shot(page, '04-decision-verified');
  log('detail page: "proof verified" (leaf hash, audit path, Ed25519 checkpoint signature)');

  step = 'tampered answers are not verified';
  const flip = (h, at) => h.slice(0, at) + (h[at] === '0' ? '1' : '0') + h.slice(at + 1);
  const tampers = [
    ['the record edited', (b) => { b.record.reason_admin = 'nothing to see here'; }, 'leaf hash of the record'],
    ['the checkpoint root changed', (b) => { b.checkpoint.root_hash = flip(b.checkpoint.root_hash, 7); }, 'audit path to the checkpoint root'],
    ['the signature changed', (b) => { b.checkpoint.signature = flip(b.checkpoint.signature, 9); }, 'checkpoint signature (Ed25519)'],
  ];
  for (const [what, mutate, where] of tampers) {
    const pattern = `**/v1/decisions/${id}`;
    await page.route(pattern, async (route) => {
      const res = await route.fetch();
      const b = await res.json();
      mutate(b);
      await route.fulfill({ response: res, body: JSON.stringify(b) });
    });
    await page.reload();
    await verdict.filter({ hasText: /proof (NOT )?verified/ }).waitFor({ timeout: T });
    const text = (await verdict.textContent()).trim();
    assert.ok(text.startsWith(`✗ proof NOT verified: ${where}`), `with ${what} the page says "${text}"`);
    if (what === 'the record edited') await shot(page, '05-decision-tampered');
    await page.unroute(pattern);
    log(`${what}: "${text.slice(0, 90)}…"`);
  }

  step = 'CSRF: a change with the cookie but without the header';
  {
    const r = await pageFetch(page, 'POST', `/v1/agents/${encodeURIComponent(AGENT)}/suspend`);
    assert.equal(r.status, 403, `answered ${r.status}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'csrf_token_missing_or_wrong');
    const wrong = await pageFetch(page, 'POST', `/v1/agents/${encodeURIComponent(AGENT)}/suspend`, { 'X-Arbiter-CSRF': 'not-the-token' });
    assert.equal(wrong.status, 403, `with a wrong token: ${wrong.status}`);
    const agent = await pageFetch(page, 'GET', `/v1/agents/${encodeURIComponent(AGENT)}`);
    assert.equal(agent.body.status, 'active', 'the agent was suspended without the CSRF token');
    log('CSRF: without the header and with a wrong one, 403 csrf_token_missing_or_wrong; nothing changed');
  }

  step = 'the agents page';
  await go(page, '#/agents', 'Agents');
  const keyRow = page.locator(`section[data-agent="${AGENT}"] tr[data-key="${KEY_ID}"]`);
  await keyRow.waitFor({ timeout: T });
  assert.match(await keyRow.textContent(), /active/);
  await noErrorShown(page, 'the agents page');
  await shot(page, '06-agents');

  step = 'the confirmation dialog closes on Escape';
  const revoke = keyRow.locator('button[data-action="revoke"]');
  await revoke.click();
  const dlg = page.locator('dialog[open]');
  await dlg.waitFor({ timeout: T });
  await shot(page, '07-revoke-dialog');
  await page.keyboard.press('Escape');
  await dlg.waitFor({ state: 'detached', timeout: T });
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.dataset.action), 'revoke', 'focus did not return to the button');
  assert.equal((await evaluate('read_ticket')).decision, true, 'the key stopped working without confirmation');
  log('revoke dialog: Escape closes it, focus returns, the key still works');

  step = 'revoking the key from the console';
  await revoke.click();
  await dlg.waitFor({ timeout: T });
  await dlg.getByRole('button', { name: 'Revoke key' }).click();
  await page.locator('main .notice.ok', { hasText: `Key ${KEY_ID}` }).waitFor({ timeout: T });
  await page.locator(`section[data-agent="${AGENT}"] tr[data-key="${KEY_ID}"]`, { hasText: 'revoked' }).waitFor({ timeout: T });
  const after = await evaluate('read_ticket');
  assert.equal(after.decision, false, `a revoked key was accepted: ${JSON.stringify(after)}`);
  await shot(page, '08-agents-key-revoked');
  log(`key ${KEY_ID} revoked with confirmation; the next decision is denied (${after.context.reason_user?.en ?? ''})`);

  step = 'rotating a key from the console';
  let rotated;
  {
    const row2 = page.locator(`section[data-agent="${AGENT}"] tr[data-key="${KEY2_ID}"]`);
    await row2.locator('button[data-action="rotate"]').click();
    await dlg.waitFor({ timeout: T });
    assert.equal(await dlg.locator('input[name="overlap"]').inputValue(), '1h');
    await dlg.getByRole('button', { name: 'Rotate' }).click();
    const secret = page.locator('#new-secret');
    await secret.waitFor({ timeout: T });
    rotated = (await secret.textContent()).trim();
    assert.match(rotated, /^arb_/, 'the new secret is not shown');
    assert.ok(await page.getByRole('button', { name: 'Copy' }).isVisible(), 'no copy button');
    await shot(page, '09-agents-key-rotated');
    assert.equal((await evaluate('read_ticket', rotated)).decision, true, 'the rotated key does not work');
    assert.equal((await evaluate('read_ticket', KEY2)).decision, true, 'the old key stopped working inside its overlap');
    // Shown once: after a reload the secret is gone from the page.
    await page.reload();
    await page.locator(`section[data-agent="${AGENT}"]`).waitFor({ timeout: T });
    assert.equal(await page.locator('#new-secret').count(), 0);
    assert.ok(!(await page.locator('main').textContent()).includes(rotated), 'the secret is shown again');
    log('key rotated: the new secret shown once with a copy button, it works, the old one works during the overlap');
  }

  step = 'suspending and activating the agent';
  {
    const sec = page.locator(`section[data-agent="${AGENT}"]`);
    await sec.getByRole('button', { name: 'Suspend' }).click();
    await dlg.waitFor({ timeout: T });
    await dlg.getByRole('button', { name: 'Suspend' }).click();
    await sec.getByRole('button', { name: 'Activate' }).waitFor({ timeout: T });
    assert.match(await sec.locator('h2').textContent(), /suspended/);
    assert.equal((await evaluate('read_ticket', rotated)).decision, false, 'a suspended agent was allowed');
    await sec.getByRole('button', { name: 'Activate' }).click();
    await dlg.waitFor({ timeout: T });
    await dlg.getByRole('button', { name: 'Activate' }).click();
    await sec.getByRole('button', { name: 'Suspend' }).waitFor({ timeout: T });
    assert.equal((await evaluate('read_ticket', rotated)).decision, true, 'the activated agent was denied');
    log('agent suspended (next decision denied) and activated again (allowed), each confirmed');
  }

  step = 'adopting a discovered identity';
  {
    // A key Arbiter does not know (say, a provider key pasted by mistake): denied, discovered.
    const stray = `sk-proj-${'A1b2C3d4'.repeat(6)}`;
    assert.equal((await evaluate('read_ticket', stray)).decision, false);
    await go(page, '#/discovered', 'Discovered identities');
    await noErrorShown(page, 'the discovered page');
    const adopt = page.getByRole('button', { name: 'Adopt…' }).first();
    await adopt.waitFor({ timeout: T });
    await shot(page, '10-discovered');
    await adopt.click();
    await dlg.waitFor({ timeout: T });
    await dlg.getByLabel('Agent id').fill('found-bot');
    await dlg.getByLabel('Owner').fill('ops@example.com');
    await dlg.getByRole('button', { name: 'Adopt' }).click();
    await page.locator('main .notice.ok', { hasText: 'Adopted as agent found-bot' }).waitFor({ timeout: T });
    const agents = await pageFetch(page, 'GET', '/v1/agents/found-bot');
    assert.equal(agents.status, 200, 'the adopted agent is not registered');
    log('a discovered identity adopted as agent found-bot');
  }

  step = 'the gap map shows the unwrapped MCP server as coarse';
  await go(page, '#/gap', 'Gap map');
  const cell = page.locator(`td[data-agent="${AGENT}"][data-layer="ai"]`);
  await cell.waitFor({ timeout: T });
  assert.equal(await cell.getAttribute('data-state'), 'coarse');
  assert.match(await cell.textContent(), /coarse/, 'the state is not written as a word');
  const finding = page.locator(`li[data-agent="${AGENT}"][data-layer="ai"]`);
  assert.match(await finding.textContent(), /Next step/);
  await noErrorShown(page, 'the gap map');
  await shot(page, '11-gap-coarse');
  log(`gap map: ${AGENT} × ai is coarse, with a next step`);

  step = 'the gap map after the server is wrapped';
  writeFileSync(GAP_CONFIG, JSON.stringify({
    mcpServers: {
      files: {
        command: ARBITER_BIN,
        args: ['mcp', 'stdio', '--server-name', 'files', '--pdp', URL_, '--', 'npx', '-y', '@modelcontextprotocol/server-filesystem', '/srv/docs'],
      },
    },
  }, null, 2));
  await page.reload();
  await cell.waitFor({ timeout: T });
  const state = await cell.getAttribute('data-state');
  assert.notEqual(state, 'coarse', 'still coarse after wrapping');
  assert.match(await cell.textContent(), new RegExp(state));
  await shot(page, '12-gap-wrapped');
  log(`gap map after wrapping: ${AGENT} × ai is ${state}`);
  // An enforced cell links to its decisions.
  const enforced = page.locator('td[data-state="enforced"] a').first();
  if (await enforced.count()) {
    const href = await enforced.getAttribute('href');
    assert.match(href, /^#\/decisions\?agent=.+&layer=.+/);
  }

  step = 'policy versions: approving one and comparing two';
  {
    // Two versions proposed by another administrator (the test's `policy-author`).
    await go(page, '#/policy', 'Policy versions');
    const rows = page.locator('main tr[data-version]');
    await rows.first().waitFor({ timeout: T });
    assert.equal(await rows.count(), 2, 'two proposed versions are listed');
    const newest = rows.first();
    const version = await newest.getAttribute('data-version');
    assert.match(await newest.textContent(), /proposed/);
    assert.equal(await newest.locator('button[data-action="activate"]').count(), 0, 'a version without its approvals can be activated');
    await newest.locator('button[data-action="approve"]').click();
    await dlg.waitFor({ timeout: T });
    await dlg.getByRole('button', { name: 'Approve' }).click();
    await page.locator('main .notice.ok', { hasText: 'Approved' }).waitFor({ timeout: T });
    const approvedRow = page.locator(`main tr[data-version="${version}"]`);
    assert.match(await approvedRow.textContent(), /approved/);
    assert.match(await approvedRow.textContent(), /console-admin/);
    assert.equal(await approvedRow.locator('button[data-action="approve"]').count(), 0, 'approving twice is offered');
    assert.equal(await approvedRow.locator('button[data-action="activate"]').count(), 1, 'an approved version cannot be activated');
    await page.getByRole('button', { name: 'Show the difference' }).click();
    const diff = page.locator('#policy-diff');
    await diff.waitFor({ timeout: T });
    assert.match(await diff.textContent(), /Changed: /);
    await noErrorShown(page, 'the policy versions page');
    await shot(page, '13-policy-versions');
    log(`policy version ${version.slice(0, 20)}… approved from the console; the difference of two versions shown`);
  }

  step = 'approving a changed MCP tool with the reviewed hash';
  {
    // The test ran `arbiter mcp stdio` twice in front of a server whose `lookup` tool changed.
    await go(page, '#/tool-pins', 'Tool pins');
    const pin = page.locator('main tr[data-server="changing"][data-tool="lookup"]');
    await pin.waitFor({ timeout: T });
    assert.equal(await pin.getAttribute('data-state'), 'changed');
    assert.match(await pin.textContent(), /changed/);
    await pin.getByRole('button', { name: 'Approve…' }).click();
    await dlg.waitFor({ timeout: T });
    assert.match(await dlg.textContent(), /IMPORTANT/, 'the changed definition is not shown for review');
    const pending = (await dlg.locator('#pending-hash').textContent()).trim();
    assert.match(pending, /^sha256:[0-9a-f]{64}$/);
    // Another hash than the one shown is refused in the dialog, which stays open.
    await dlg.getByLabel('Reviewed hash').fill(`sha256:${'0'.repeat(64)}`);
    await dlg.getByRole('button', { name: 'Approve this definition' }).click();
    await dlg.locator('.notice.error', { hasText: 'not the hash' }).waitFor({ timeout: T });
    await shot(page, '14-tool-pin-approve-dialog');
    await dlg.getByLabel('Reviewed hash').fill(pending);
    await dlg.getByRole('button', { name: 'Approve this definition' }).click();
    await page.locator('main .notice.ok', { hasText: 'Approved changing/lookup' }).waitFor({ timeout: T });
    const after = page.locator('main tr[data-server="changing"][data-tool="lookup"]');
    assert.equal(await after.getAttribute('data-state'), 'pinned');
    assert.ok((await after.textContent()).includes(pending), 'the approved hash is not the pinned one');
    await shot(page, '15-tool-pins');
    log(`changed tool changing/lookup approved at ${pending.slice(0, 20)}… (a wrong hash refused first)`);
  }

  step = 'approving a pending request from the approvals queue';
  {
    // The test's policies ask a person to approve escalating a ticket.
    const asked = await evaluate('escalate_ticket', rotated);
    assert.equal(asked.context.outcome, 'require_approval', JSON.stringify(asked));
    const apr = asked.context.approval.id;
    await go(page, '#/approvals', 'Approvals queue');
    const row = page.locator(`main tr[data-approval="${apr}"]`);
    await row.waitFor({ timeout: T });
    assert.match(await row.textContent(), /pending/);
    assert.match(await row.textContent(), /escalate_ticket/);
    await shot(page, '16-approvals');
    await row.getByRole('button', { name: 'Approve…' }).click();
    await dlg.waitFor({ timeout: T });
    await dlg.getByLabel('Reason (required, recorded)').fill('customer ticket 4411');
    await dlg.getByRole('button', { name: 'Approve' }).click();
    await page.locator('main .notice.ok', { hasText: `Approved ${apr}` }).waitFor({ timeout: T });
    await noErrorShown(page, 'the approvals page');
    const retry = await evaluate('escalate_ticket', rotated);
    assert.equal(retry.decision, true, `the approved request was not allowed: ${JSON.stringify(retry)}`);
    assert.equal((await evaluate('escalate_ticket', rotated)).decision, false, 'an approval was used twice');
    log(`approval ${apr} approved from the queue: the request allowed once, then asked again`);
  }

  step = 'a narrow screen (375 px)';
  {
    const narrow = await browser.newContext({ viewport: { width: 375, height: 800 }, storageState: await admin.storageState() });
    const p = await narrow.newPage();
    watch(p, 'narrow');
    await p.goto(`${URL_}/console/#/gap`);
    await p.locator('main h1', { hasText: 'Gap map' }).waitFor({ timeout: T });
    const menu = p.locator('#menu-toggle');
    assert.ok(await menu.isVisible(), 'no menu button on a narrow screen');
    assert.ok(!(await p.locator('#site-nav').isVisible()), 'the navigation is not collapsed');
    const wide = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 375 + 1, `the page is ${wide} px wide at 375 px`);
    await shot(p, '17-narrow-gap');
    await menu.click();
    assert.equal(await menu.getAttribute('aria-expanded'), 'true');
    await p.locator('#site-nav a', { hasText: 'Decisions' }).waitFor({ state: 'visible', timeout: T });
    await shot(p, '18-narrow-menu');
    await p.keyboard.press('Escape');
    assert.equal(await menu.getAttribute('aria-expanded'), 'false');
    await narrow.close();
    log('375 px: the navigation collapses behind a menu button; no horizontal scroll');
  }

  step = 'an auditor cannot revoke';
  {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const p = await signIn(ctx, AUDITOR, 'auditor');
    await p.locator('#who-name', { hasText: '(auditor)' }).waitFor({ timeout: T });
    await go(p, '#/agents', 'Agents');
    await p.locator(`section[data-agent="${AGENT}"]`).waitFor({ timeout: T });
    assert.equal(await p.locator('main button').count(), 0, 'an auditor is shown buttons that change things');
    await shot(p, '19-agents-auditor');
    const s = await pageFetch(p, 'GET', '/console/api/session');
    assert.equal(s.status, 200);
    assert.equal(s.body.role, 'auditor');
    const r = await pageFetch(p, 'DELETE', `/v1/agents/${encodeURIComponent(AGENT)}/keys/${encodeURIComponent(KEY_ID)}`, { 'X-Arbiter-CSRF': s.body.csrf });
    assert.equal(r.status, 403, `the auditor's revoke answered ${r.status}: ${JSON.stringify(r.body)}`);
    assert.notEqual(r.body.code, 'csrf_token_missing_or_wrong', 'refused for the CSRF token, not for the role');
    const suspend = await pageFetch(p, 'POST', `/v1/agents/${encodeURIComponent(AGENT)}/suspend`, { 'X-Arbiter-CSRF': s.body.csrf });
    assert.equal(suspend.status, 403, `the auditor's suspend answered ${suspend.status}`);
    await ctx.close();
    log(`auditor: no write buttons; the API refuses (403 ${r.body.code})`);
  }

  step = 'signing out';
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#token').waitFor({ timeout: T });
  const gone = await pageFetch(page, 'GET', '/v1/agents');
  assert.equal(gone.status, 401, `after signing out /v1/agents answered ${gone.status}`);
  const sess = await pageFetch(page, 'GET', '/console/api/session');
  assert.equal(sess.status, 401);
  await page.reload();
  await page.locator('#token').waitFor({ timeout: T });
  await shot(page, '20-signed-out');
  log('signed out: the API answers 401, a reload shows the sign-in form');

  step = 'no script errors or CSP violations';
  assert.deepEqual(problems, []);
  await admin.close();
} catch (e) {
  failed = e;
} finally {
  await browser.close().catch(() => {});
}

const secs = ((Date.now() - started) / 1000).toFixed(1);
if (failed) {
  console.error(`\nFAILED at step "${step}" after ${secs}s:\n${failed && failed.stack ? failed.stack : failed}`);
  if (problems.length) console.error(`page problems:\n  ${problems.join('\n  ')}`);
  console.error(`screenshots so far: ${SHOTS}`);
  process.exit(1);
}
console.log(`\nconsole.test: every step passed in ${secs}s; screenshots in ${SHOTS}`);
