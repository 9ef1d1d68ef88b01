// Unit tests of the console's proof checker (crates/arbiter-server/console/verify.js) in node,
// whose WebCrypto is the same API the browser has.
//
//   node tests/console/verify.test.mjs [BUNDLE.json ...]
//
// Each BUNDLE is a real answer of `GET /v1/decisions/{id}` (crates/arbiter-cli/tests/console.rs
// writes them from a running `arbiter serve`; ARBITER_CONSOLE_BUNDLES may also list them,
// separated by the path separator). Each must verify; each tampered copy must not, failing at
// the step the tampering breaks. Without bundles only the canonical-JSON cases run.
// Exits 1 with a message naming the failed check.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const verifyPath = path.join(here, '../../crates/arbiter-server/console/verify.js');
const { verifyBundle, canonicalJson, parseJsonExact, leafHash, bytesToHex } = await import(pathToFileURL(verifyPath).href);

let failures = 0;
let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${String(e && e.stack ? e.stack : e).split('\n').join('\n     ')}`);
  }
}

// --- RFC 8785 canonical JSON ------------------------------------------------------------
const jcs = (text) => canonicalJson(parseJsonExact(text));
await check('canonical JSON sorts members by UTF-16 code units', () => {
  assert.equal(jcs('{"b":1,"a":2,"\\u20ac":3,"\\ud83d\\ude00":4,"\\ufb01":5}'), '{"a":2,"b":1,"€":3,"😀":4,"ﬁ":5}');
});
await check('canonical JSON escapes only what RFC 8785 escapes', () => {
  assert.equal(jcs('"a\\/b\\u0001\\u001f\\n\\t\\"\\\\\\u00e9"'), '"a/b\\u0001\\u001f\\n\\t\\"\\\\é"');
});
await check('canonical JSON keeps big integers exactly and writes floats as ECMAScript does', () => {
  assert.equal(jcs('[18446744073709551615,-9223372036854775808,-0,1.0,1e21,0.000001,1e-7,5e-324,1.5E+2]'),
    '[18446744073709551615,-9223372036854775808,0,1,1e+21,0.000001,1e-7,5e-324,150]');
});
await check('canonical JSON of nested values, no whitespace', () => {
  assert.equal(jcs(' { "z" : [ true , false , null , { } , [ ] ] , "a" : { "y" : "x" } } '), '{"a":{"y":"x"},"z":[true,false,null,{},[]]}');
});
await check('the exact parser refuses what is not JSON', () => {
  for (const bad of ['{"a":1,"a":2}', '[1,]', '{"a" 1}', '01', '"\u0001"', '[1] x', '{"a":"\\x"}']) {
    assert.throws(() => parseJsonExact(bad), SyntaxError, bad);
  }
});
await check('the parser refuses nesting deeper than 128', () => {
  assert.throws(() => parseJsonExact('['.repeat(200) + ']'.repeat(200)), /deeper/);
});
await check('leaf hash is SHA-256(0x00 || data) (RFC 6962 empty leaf)', async () => {
  assert.equal(bytesToHex(await leafHash(new Uint8Array())), '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
});

// --- real bundles -----------------------------------------------------------------------
const files = process.argv.slice(2).concat((process.env.ARBITER_CONSOLE_BUNDLES || '').split(path.delimiter).filter(Boolean));
const flipHex = (h, at = 0) => h.slice(0, at) + (h[at] === '0' ? '1' : '0') + h.slice(at + 1);

for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const name = path.basename(file);
  const bundle = JSON.parse(text);
  const id = bundle.record.decision_id;
  const expectFail = async (label, mutated, step) => {
    await check(`${name}: ${label} → NOT verified at "${step}"`, async () => {
      const v = await verifyBundle(typeof mutated === 'string' ? mutated : JSON.stringify(mutated), id);
      assert.equal(v.ok, false, `verified although ${label}`);
      assert.ok(v.failed.startsWith(step), `failed at "${v.failed}", expected "${step}"`);
    });
  };
  const copy = () => JSON.parse(text);

  await check(`${name}: the served bundle verifies (leaf ${bundle.leaf_index} of ${bundle.tree_size}, ${bundle.proof.length} path hashes)`, async () => {
    const v = await verifyBundle(text, id);
    assert.equal(v.ok, true, v.failed);
    assert.equal(v.steps.length, 6);
  });
  await check(`${name}: it also verifies from a parsed object`, async () => {
    const v = await verifyBundle(JSON.parse(text), id);
    assert.equal(v.ok, true, v.failed);
  });
  {
    const b = copy();
    b.record.reason_admin += ' (edited)';
    await expectFail('the record was edited', b, 'leaf hash of the record');
  }
  {
    const b = copy();
    b.record.outcome = b.record.outcome === 'allow' ? 'deny' : 'allow';
    await expectFail('the outcome was flipped', b, 'leaf hash of the record');
  }
  {
    const b = copy();
    b.leaf_hash = flipHex(b.leaf_hash, 5);
    await expectFail('the leaf hash was changed', b, 'leaf hash of the record');
  }
  if (bundle.proof.length) {
    const b = copy();
    b.proof[0] = flipHex(b.proof[0], 10);
    await expectFail('an audit path hash was changed', b, 'audit path to the checkpoint root');
    const c = copy();
    c.proof.pop();
    await expectFail('the audit path was cut short', c, 'audit path to the checkpoint root');
  }
  {
    const b = copy();
    b.checkpoint.root_hash = flipHex(b.checkpoint.root_hash, 3);
    await expectFail('the checkpoint root was changed', b, 'audit path to the checkpoint root');
  }
  {
    const b = copy();
    b.checkpoint.signature = flipHex(b.checkpoint.signature, 20);
    await expectFail('the signature was changed', b, 'checkpoint signature (Ed25519)');
  }
  {
    const b = copy();
    b.checkpoint.ts_us = Number(b.checkpoint.ts_us) + 1;
    await expectFail('the checkpoint time was changed', b, 'checkpoint signature (Ed25519)');
  }
  {
    const b = copy();
    b.public_key = flipHex(b.public_key, 0);
    await expectFail('another public key was given', b, 'checkpoint key id');
  }
  {
    const b = copy();
    b.leaf_index = Number(b.leaf_index) + 1;
    await expectFail('the leaf index was changed', b, 'record and proof agree');
  }
  await expectFail('the answer names another decision', text.replace(id, id.replace(/.$/, (c) => (c === '0' ? '1' : '0'))), 'record and proof agree');
}

console.log(`\n${passed} passed, ${failures} failed${files.length ? '' : ' (no bundles given: canonical JSON cases only)'}`);
process.exit(failures ? 1 : 0);
