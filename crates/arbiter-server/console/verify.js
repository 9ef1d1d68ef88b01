// Checks a decision's inclusion proof (GET /v1/decisions/{id}) with WebCrypto only, in the
// browser or in node (>= 20, globalThis.crypto):
//   1. the record's leaf hash: SHA-256(0x00 || canonical bytes), where the canonical bytes are
//      the record re-encoded as RFC 8785 JSON (the served record is the parsed canonical
//      encoding; numbers are kept as written, so integers beyond 2^53 survive);
//   2. the audit path from that leaf to the checkpoint's root (RFC 9162 §2.1.3.2; interior
//      nodes SHA-256(0x01 || left || right));
//   3. the checkpoint's key id (first 8 bytes of SHA-256 of the public key) and its Ed25519
//      signature over the signed body
//      "arbiter-checkpoint/v1\n<node_id>\n<tree_size>\n<root hex>\n<ts_us>\n".
// Nothing here trusts the server beyond the public key it names: compare the key id shown
// with the one you hold (`arbiter log pubkey`).

const CHECKPOINT_TAG = 'arbiter-checkpoint/v1';
const MAX_DEPTH = 128;
const MAX_PROOF = 64;

/** A JSON number kept exactly as written. */
export class JsonNumber {
  constructor(text) {
    this.text = text;
  }
  valueOf() {
    return Number(this.text);
  }
  toString() {
    return this.text;
  }
  toJSON() {
    return Number(this.text);
  }
}

/** Parses JSON text like JSON.parse, but keeps every number as a JsonNumber (its text). */
export function parseJsonExact(text) {
  let i = 0;
  const n = text.length;
  const fail = (what) => {
    throw new SyntaxError(`invalid JSON at offset ${i}: ${what}`);
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const value = (depth) => {
    if (depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = Object.create(null);
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a member name');
        const key = string();
        if (Object.prototype.hasOwnProperty.call(obj, key)) fail(`duplicate member "${key}"`);
        ws();
        if (text[i] !== ':') fail('expected ":"');
        i++;
        obj[key] = value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '') fail('unexpected character');
    i += m[0].length;
    return new JsonNumber(m[0]);
  };
  const string = () => {
    // text[i] === '"'
    i++;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail('control character in a string');
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === 'u') {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape');
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
        } else {
          fail('bad escape');
        }
        start = i;
        continue;
      }
      i++;
    }
  };
  const v = value(0);
  ws();
  if (i !== n) fail('trailing characters');
  return v;
}

function canonicalString(s) {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0d) out += '\\r';
    else if (c < 0x20) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[k];
  }
  return out + '"';
}

function canonicalNumber(v) {
  const text = v instanceof JsonNumber ? v.text : String(v);
  if (/^-?[0-9]+$/.test(text)) return BigInt(text).toString();
  const x = Number(text);
  if (!Number.isFinite(x)) throw new Error(`number ${text} cannot be encoded canonically`);
  if (Object.is(x, -0)) return '0';
  return String(x);
}

/** RFC 8785 canonical JSON of a value (from parseJsonExact or JSON.parse). */
export function canonicalJson(v, depth = 0) {
  if (depth > MAX_DEPTH) throw new Error(`value nests deeper than ${MAX_DEPTH} levels`);
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'string') return canonicalString(v);
  if (typeof v === 'number' || v instanceof JsonNumber) return canonicalNumber(v);
  if (Array.isArray(v)) return '[' + v.map((x) => canonicalJson(x, depth + 1)).join(',') + ']';
  if (typeof v === 'object') {
    // Default string order compares UTF-16 code units, as RFC 8785 requires.
    const keys = Object.keys(v).sort();
    return '{' + keys.map((k) => canonicalString(k) + ':' + canonicalJson(v[k], depth + 1)).join(',') + '}';
  }
  throw new Error(`a ${typeof v} is not JSON`);
}

function hexToBytes(hex, len, what) {
  if (typeof hex !== 'string' || !/^[0-9a-f]*$/.test(hex) || hex.length !== len * 2) {
    throw new Error(`${what} is not ${len * 2} lowercase hex digits`);
  }
  const out = new Uint8Array(len);
  for (let k = 0; k < len; k++) out[k] = parseInt(hex.slice(2 * k, 2 * k + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let k = 0; k < a.length; k++) d |= a[k] ^ b[k];
  return d === 0;
}

async function sha256(...parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const buf = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
}

/** SHA-256(0x00 || data). */
export async function leafHash(data) {
  return sha256(Uint8Array.of(0), data);
}

/** SHA-256(0x01 || left || right). */
export async function nodeHash(left, right) {
  return sha256(Uint8Array.of(1), left, right);
}

function toBigInt(v, what) {
  const text = v instanceof JsonNumber ? v.text : typeof v === 'number' ? String(v) : null;
  if (text === null || !/^[0-9]+$/.test(text)) throw new Error(`${what} is not a non-negative integer`);
  return BigInt(text);
}

/** The root an RFC 9162 inclusion proof leads to, or an Error saying why it is malformed. */
export async function rootFromInclusion(leaf, index, size, proof) {
  if (index >= size) throw new Error(`leaf index ${index} is not below tree size ${size}`);
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new Error('the audit path has too many hashes');
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error('the audit path has too few hashes');
  return r;
}

/** The exact bytes a checkpoint's signature covers. */
export function checkpointBody(cp) {
  return `${CHECKPOINT_TAG}\n${cp.node_id}\n${String(cp.tree_size)}\n${cp.root_hash}\n${String(cp.ts_us)}\n`;
}

/**
 * Verifies a decision bundle, given as the response's text (preferred: numbers kept exactly)
 * or as a parsed object. Resolves to
 *   {ok: true, steps: [{step, ok, detail}], keyId}
 * or {ok: false, failed: "<which step>: <why>", steps}.
 * `expectedId`, when given, must be the record's decision id.
 */
export async function verifyBundle(input, expectedId) {
  const steps = [];
  const step = async (name, fn) => {
    try {
      const detail = await fn();
      steps.push({ step: name, ok: true, detail: detail || '' });
      return true;
    } catch (e) {
      steps.push({ step: name, ok: false, detail: e && e.message ? e.message : String(e) });
      return false;
    }
  };
  const result = () => {
    const bad = steps.find((s) => !s.ok);
    return bad ? { ok: false, failed: `${bad.step}: ${bad.detail}`, steps } : { ok: true, steps };
  };
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    steps.push({ step: 'WebCrypto', ok: false, detail: 'crypto.subtle is not available (the page must be served over https or from localhost)' });
    return result();
  }
  let b;
  if (!(await step('reading the answer', () => {
    b = typeof input === 'string' ? parseJsonExact(input) : input;
    if (!b || typeof b !== 'object') throw new Error('the answer is not a JSON object');
    for (const f of ['record', 'leaf_index', 'tree_size', 'leaf_hash', 'proof', 'checkpoint', 'public_key']) {
      if (!(f in b)) throw new Error(`the answer has no \`${f}\``);
    }
    if (!Array.isArray(b.proof)) throw new Error('`proof` is not a list');
    if (b.proof.length > MAX_PROOF) throw new Error(`the audit path has more than ${MAX_PROOF} hashes`);
    return 'record, leaf index, audit path, checkpoint and public key present';
  }))) return result();

  const rec = b.record;
  const cp = b.checkpoint;
  let index, size, cpSize, leaf, root, pub;
  if (!(await step('record and proof agree', () => {
    if (!rec || typeof rec !== 'object' || Array.isArray(rec)) throw new Error('`record` is not an object');
    if (!cp || typeof cp !== 'object') throw new Error('`checkpoint` is not an object');
    index = toBigInt(b.leaf_index, '`leaf_index`');
    size = toBigInt(b.tree_size, '`tree_size`');
    cpSize = toBigInt(cp.tree_size, '`checkpoint.tree_size`');
    if (expectedId !== undefined && rec.decision_id !== expectedId) {
      throw new Error(`the record is decision ${rec.decision_id}, not ${expectedId}`);
    }
    if (toBigInt(rec.seq, '`record.seq`') !== index) throw new Error(`record.seq ${String(rec.seq)} is not the leaf index ${index}`);
    if (size !== cpSize) throw new Error(`the proof is for tree size ${size}, the checkpoint for ${cpSize}`);
    leaf = hexToBytes(b.leaf_hash, 32, '`leaf_hash`');
    root = hexToBytes(cp.root_hash, 32, '`checkpoint.root_hash`');
    pub = hexToBytes(b.public_key, 32, '`public_key`');
    return `leaf ${index} of ${size}`;
  }))) return result();

  if (!(await step('leaf hash of the record', async () => {
    const bytes = new TextEncoder().encode(canonicalJson(rec));
    const got = await leafHash(bytes);
    if (!equalBytes(got, leaf)) {
      throw new Error(`SHA-256(0x00 || canonical record) is ${bytesToHex(got)}, the answer says ${b.leaf_hash}`);
    }
    return `SHA-256(0x00 || ${bytes.length} canonical bytes) = ${b.leaf_hash}`;
  }))) return result();

  if (!(await step('audit path to the checkpoint root', async () => {
    const path = b.proof.map((h, k) => hexToBytes(h, 32, `proof hash ${k}`));
    const got = await rootFromInclusion(leaf, index, size, path);
    if (!equalBytes(got, root)) {
      throw new Error(`the path leads to ${bytesToHex(got)}, the checkpoint's root is ${cp.root_hash}`);
    }
    return `${path.length} hashes lead to root ${cp.root_hash}`;
  }))) return result();

  let keyId;
  if (!(await step('checkpoint key id', async () => {
    keyId = bytesToHex((await sha256(pub)).slice(0, 8));
    if (cp.key_id !== keyId) throw new Error(`the checkpoint names key ${cp.key_id}, the public key's id is ${keyId}`);
    if (typeof cp.node_id !== 'string' || cp.node_id.includes('\n')) throw new Error('`checkpoint.node_id` is not a one-line string');
    return `key ${keyId}`;
  }))) return result();

  await step('checkpoint signature (Ed25519)', async () => {
    const sig = hexToBytes(cp.signature, 64, '`checkpoint.signature`');
    toBigInt(cp.tree_size, '`checkpoint.tree_size`');
    const ts = cp.ts_us instanceof JsonNumber ? cp.ts_us.text : String(cp.ts_us);
    if (!/^-?[0-9]+$/.test(ts)) throw new Error('`checkpoint.ts_us` is not an integer');
    let key;
    try {
      key = await crypto.subtle.importKey('raw', pub, { name: 'Ed25519' }, false, ['verify']);
    } catch (e) {
      throw new Error(`this browser cannot import an Ed25519 key (${e && e.message ? e.message : e})`);
    }
    const body = new TextEncoder().encode(checkpointBody(cp));
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, sig, body);
    if (!ok) throw new Error('the signature does not verify with the public key');
    return `signed by key ${keyId} over tree size ${String(cp.tree_size)}`;
  });
  const r = result();
  r.keyId = keyId;
  return r;
}
