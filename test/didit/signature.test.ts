import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  asciiEscape,
  canonicalJson,
  hmacHex,
  signWebhook,
  simpleMessage,
  verifyWebhookSignature,
  type SignatureHeaders,
} from '../../src/didit/signature.js';

interface Vector {
  name: string;
  raw: string;
  canonical?: string;
  sha256: string;
  x_timestamp: string;
  x_signature: string;
  x_signature_v2: string;
  x_signature_v2_ascii?: string;
  x_signature_simple: string;
}
const { secret, vectors } = JSON.parse(readFileSync('test/didit/vectors.json', 'utf8')) as {
  secret: string;
  vectors: Vector[];
};

const verify = (raw: string | Buffer, headers: SignatureHeaders, nowS: number, secrets = [secret]) =>
  verifyWebhookSignature({
    rawBody: Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'utf8'),
    headers,
    secrets,
    nowS,
    toleranceS: 300,
  });

t.test('the vectors cover the optional forms (canonical text, ASCII-escaped V2)', async (t) => {
  t.ok(vectors.filter((v) => v.canonical).length >= 1, 'a vector with its canonical form');
  t.ok(vectors.filter((v) => v.x_signature_v2_ascii).length >= 1, 'a vector with an ASCII-escaped V2 signature');
});

for (const v of vectors) {
  t.test(`vector ${v.name}`, async (t) => {
    const raw = Buffer.from(v.raw, 'utf8');
    const now = Number(v.x_timestamp);
    t.equal(createHash('sha256').update(raw).digest('hex'), v.sha256, 'the bytes are the contract bytes');
    const body = JSON.parse(v.raw) as Record<string, unknown>;
    if (v.canonical) t.equal(canonicalJson(body), v.canonical, 'canonical form');
    t.equal(hmacHex(secret, canonicalJson(body)), v.x_signature_v2, 'V2');
    t.equal(hmacHex(secret, raw), v.x_signature, 'X-Signature over raw bytes');
    t.equal(hmacHex(secret, simpleMessage(body)), v.x_signature_simple, 'Simple');
    if (v.x_signature_v2_ascii)
      t.equal(hmacHex(secret, asciiEscape(canonicalJson(body))), v.x_signature_v2_ascii, 'V2 ASCII-escaped variant');

    t.match(verify(raw, { 'x-signature-v2': v.x_signature_v2, 'x-timestamp': v.x_timestamp }, now), {
      ok: true,
      scheme: 'v2',
      envelopeOnly: false,
    });
    t.match(verify(raw, { 'x-signature': v.x_signature, 'x-timestamp': v.x_timestamp }, now), {
      ok: true,
      scheme: 'raw',
    });
    t.match(verify(raw, { 'x-signature-simple': v.x_signature_simple, 'x-timestamp': v.x_timestamp }, now), {
      ok: true,
      scheme: 'simple',
      envelopeOnly: true,
    });
    if (v.x_signature_v2_ascii)
      t.match(verify(raw, { 'x-signature-v2': v.x_signature_v2_ascii }, now), { ok: true, scheme: 'v2_ascii' });
    t.match(
      verify(raw, { 'x-signature-v2': v.x_signature_v2.toUpperCase(), 'x-timestamp': v.x_timestamp }, now),
      { ok: true },
      'hex case does not matter',
    );
  });
}

const v1 = vectors[0]!;
const v1Now = Number(v1.x_timestamp);

t.test('negative cases from the contract', async (t) => {
  const spaced = v1.raw.replace('"status":"Approved","timestamp"', '"status": "Approved", "timestamp"');
  t.match(
    verify(spaced, { 'x-signature': v1.x_signature }, v1Now),
    { ok: false, reason: 'bad_signature' },
    'whitespace breaks X-Signature',
  );
  t.match(
    verify(spaced, { 'x-signature-v2': v1.x_signature_v2 }, v1Now),
    { ok: true, scheme: 'v2' },
    'whitespace keeps V2',
  );
  t.match(
    verify(spaced, { 'x-signature-simple': v1.x_signature_simple }, v1Now),
    { ok: true, scheme: 'simple' },
    'whitespace keeps Simple',
  );
  const tampered = v1.raw.replace('"score":91.37', '"score":99.37');
  t.match(verify(tampered, { 'x-signature': v1.x_signature }, v1Now), { ok: false });
  t.match(verify(tampered, { 'x-signature-v2': v1.x_signature_v2 }, v1Now), { ok: false });
  t.match(
    verify(tampered, { 'x-signature-simple': v1.x_signature_simple }, v1Now),
    { ok: true, envelopeOnly: true },
    'Simple does not cover decision: envelope only',
  );
  t.match(verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2, 'x-timestamp': '1767225901' }, v1Now), {
    ok: false,
    reason: 'timestamp_mismatch',
  });
  t.match(
    verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, 1767225600 - 301),
    { ok: false, reason: 'stale' },
    'now-301',
  );
  t.match(
    verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, 1767225600 + 301),
    { ok: false, reason: 'stale' },
    'now+301',
  );
  t.match(verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, 1767225600 - 299), { ok: true });
  t.match(verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, 1767225600 + 299), { ok: true });
});

t.test('missing, short, odd-length, non-hex and empty signatures fail cleanly', async (t) => {
  t.match(verify(v1.raw, {}, v1Now), { ok: false, reason: 'missing_signature' });
  for (const bad of [
    '',
    'abc',
    v1.x_signature_v2.slice(0, 63),
    `${v1.x_signature_v2}00`,
    'z'.repeat(64),
    ` ${v1.x_signature_v2.slice(1)}`,
  ]) {
    t.match(
      verify(v1.raw, { 'x-signature-v2': bad }, v1Now),
      { ok: false, reason: bad === '' ? 'missing_signature' : 'bad_signature' },
      JSON.stringify(bad.slice(0, 10)),
    );
  }
  t.match(verify('not json', { 'x-signature-v2': v1.x_signature_v2 }, v1Now), { ok: false, reason: 'malformed' });
  t.match(
    verify('[1,2]', { 'x-signature-v2': v1.x_signature_v2 }, v1Now),
    { ok: false, reason: 'bad_signature' },
    'valid JSON that is not the signed object simply fails the MAC',
  );
});

t.test('a wrong secret fails; the previous secret is accepted during a rotation', async (t) => {
  t.match(verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, v1Now, ['another-secret-another-secret-1234']), {
    ok: false,
    reason: 'bad_signature',
  });
  t.match(
    verify(v1.raw, { 'x-signature-v2': v1.x_signature_v2 }, v1Now, ['new-secret-new-secret-new-secret-99', secret]),
    { ok: true, secretIndex: 1 },
  );
});

t.test('a body without a signed timestamp is not fresh', async (t) => {
  const raw = JSON.stringify({ session_id: 'x', status: 'Approved', webhook_type: 'status.updated' });
  const headers = signWebhook(raw, secret);
  t.match(verify(raw, { 'x-signature-v2': headers['x-signature-v2'] }, v1Now), { ok: false, reason: 'stale' });
});

t.test('generated bodies with non-ASCII names and whole floats verify under V2 after re-encoding', async (t) => {
  for (const name of ['José', 'Müller', '日本', 'Zoë/Ø', 'emoji 😀']) {
    const body = {
      timestamp: v1Now,
      session_id: 'abc',
      status: 'Approved',
      webhook_type: 'status.updated',
      vendor_data: name,
      decision: { score: 1.5, whole: 96 },
    };
    const raw = JSON.stringify(body);
    const sig = signWebhook(raw, secret);
    const reencoded = asciiEscape(JSON.stringify(body, null, 2)).replace('"whole": 96', '"whole": 96.0');
    t.match(verify(reencoded, { 'x-signature-v2': sig['x-signature-v2'] }, v1Now), { ok: true, scheme: 'v2' }, name);
    t.match(
      verify(reencoded, { 'x-signature': sig['x-signature'] }, v1Now),
      { ok: false },
      `${name}: raw MAC breaks on re-encoding`,
    );
  }
});

t.test('random signatures never verify (1,000 tries)', async (t) => {
  let accepted = 0;
  for (let i = 0; i < 1000; i++)
    if (verify(v1.raw, { 'x-signature-v2': randomBytes(32).toString('hex') }, v1Now).ok) accepted += 1;
  t.equal(accepted, 0);
});
