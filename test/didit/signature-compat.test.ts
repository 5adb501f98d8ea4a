import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  canonicalFromText,
  canonicalJson,
  hmacHex,
  nestsDeeperThan,
  pythonFloatRepr,
  verifyWebhookSignature,
} from '../../src/didit/signature.js';

interface Fixtures {
  secret: string;
  timestamp: number;
  cases: Record<
    string,
    { body: string; canonical?: string; signatures: { raw: string; v2: string; v2_ascii?: string; simple?: string } }
  >;
}
const didit = JSON.parse(readFileSync('test/didit/didit-fixtures.json', 'utf8')) as Fixtures;
const python = JSON.parse(readFileSync('test/didit/python-vectors.json', 'utf8')) as Fixtures;

const verify = (secret: string, nowS: number, body: string, headers: Record<string, string>) =>
  verifyWebhookSignature({ rawBody: Buffer.from(body, 'utf8'), headers, secrets: [secret], nowS, toleranceS: 300 });

t.test("Didit's 8 published deliveries verify under every scheme, V2 from our canonical form", async (t) => {
  t.equal(Object.keys(didit.cases).length, 8);
  for (const [name, c] of Object.entries(didit.cases)) {
    t.equal(
      hmacHex(didit.secret, canonicalFromText(c.body)),
      c.signatures.v2,
      `${name}: V2 over the canonical form of the text`,
    );
    t.equal(
      hmacHex(didit.secret, canonicalJson(JSON.parse(c.body))),
      c.signatures.v2,
      `${name}: V2 over the canonical form of the value`,
    );
    t.match(
      verify(didit.secret, didit.timestamp, c.body, { 'x-signature': c.signatures.raw }),
      { ok: true, scheme: 'raw' },
      `${name}: raw`,
    );
    t.match(
      verify(didit.secret, didit.timestamp, c.body, { 'x-signature-v2': c.signatures.v2 }),
      { ok: true, scheme: 'v2' },
      `${name}: V2 alone`,
    );
    t.match(
      verify(didit.secret, didit.timestamp, c.body, { 'x-signature-simple': c.signatures.simple! }),
      { ok: true, scheme: 'simple', envelopeOnly: true },
      `${name}: Simple`,
    );
    // A middleware that re-encodes the body (JSON.parse + pretty JSON.stringify, as Express would) keeps V2.
    const reencoded = JSON.stringify(JSON.parse(c.body), null, 2);
    t.match(
      verify(didit.secret, didit.timestamp, reencoded, {
        'x-signature': c.signatures.raw,
        'x-signature-v2': c.signatures.v2,
      }),
      { ok: true, scheme: 'v2' },
      `${name}: re-encoded`,
    );
  }
});

t.test(
  'generated Python cases: tiny, huge and integral floats, negative zero, big ints, unicode, controls, nesting',
  async (t) => {
    for (const [name, c] of Object.entries(python.cases)) {
      t.equal(canonicalFromText(c.body), c.canonical, `${name}: canonical form from Didit's bytes`);
      t.equal(hmacHex(python.secret, canonicalFromText(c.body)), c.signatures.v2, `${name}: V2`);
      t.match(
        verify(python.secret, python.timestamp, c.body, { 'x-signature-v2': c.signatures.v2 }),
        { ok: true, scheme: 'v2' },
        `${name}: verifies`,
      );
      t.match(
        verify(python.secret, python.timestamp, c.body, { 'x-signature-v2': c.signatures.v2_ascii! }),
        { ok: true, scheme: /^[\x20-\x7e]*$/.test(c.canonical!) ? 'v2' : 'v2_ascii' },
        `${name}: ASCII variant`,
      );
      t.match(
        verify(python.secret, python.timestamp, c.body, { 'x-signature': c.signatures.raw }),
        { ok: true, scheme: 'raw' },
        `${name}: raw`,
      );
      // JavaScript re-encoding (0.00001, 1e+21, 100 for 100.0) still verifies: the value is what is signed.
      // Ints beyond 2^53 are the exception: JSON.parse rounds them, so only the raw MAC can carry them.
      const js = JSON.stringify(JSON.parse(c.body));
      const viaJs = verify(python.secret, python.timestamp, js, { 'x-signature-v2': c.signatures.v2 });
      if (name === 'big_ints') t.match(viaJs, { ok: false }, 'big ints do not survive a JS re-encoder');
      else t.match(viaJs, { ok: true, scheme: 'v2' }, `${name}: after a JS re-encoder`);
      if (name !== 'big_ints')
        t.equal(
          canonicalJson(JSON.parse(c.body)),
          c.canonical,
          `${name}: canonical form of the parsed value (what the simulator signs)`,
        );
    }
  },
);

t.test("Python's repr for every float class", async (t) => {
  const cases: Array<[number, string]> = [
    [1e-5, '1e-05'],
    [0.0001, '0.0001'],
    [1.5e-7, '1.5e-07'],
    [5e-324, '5e-324'],
    [0.1, '0.1'],
    [95.4, '95.4'],
    [1e16, '1e+16'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [1234567890123456.8, '1234567890123456.8'],
    [-0, '-0.0'],
    [0, '0.0'],
    [100, '100.0'],
    [-3.14e-10, '-3.14e-10'],
    [123.456, '123.456'],
  ];
  for (const [n, repr] of cases) t.equal(pythonFloatRepr(n), repr, repr);
});

t.test('malformed text is refused by the canonicaliser, strictly', async (t) => {
  for (const bad of [
    '',
    '{',
    '{"a":1,}',
    '[1,]',
    '{"a" 1}',
    '01',
    '-',
    '1.',
    '.5',
    '"\u0001"',
    '{"a":1}x',
    'tru',
    "{'a':1}",
    'NaN',
    '"\\x"',
  ]) {
    t.throws(() => canonicalFromText(bad), { name: 'CanonicalFormError' }, JSON.stringify(bad));
  }
  t.equal(
    canonicalFromText(' { "b" : [ 1 , 2.0 ] , "a" : -0 , "a" : "last" } '),
    '{"a":"last","b":[1,2]}',
    'whitespace, duplicate keys (last wins), -0',
  );
});

t.test('depth is measured without recursion; beyond the cap nothing is parsed', async (t) => {
  t.equal(nestsDeeperThan('['.repeat(40_000), 32), true);
  t.equal(nestsDeeperThan(`${'['.repeat(32)}${']'.repeat(32)}`, 32), false);
  t.equal(nestsDeeperThan(`{"a":"${'['.repeat(100)}"}`, 32), false, 'brackets inside strings do not count');
  t.equal(nestsDeeperThan(`{"a":"\\"${'{'.repeat(100)}"}`, 32), false, 'escaped quotes keep the string open');
  const deep = `${'{"a":'.repeat(40_000)}1${'}'.repeat(40_000)}`;
  for (const headers of <Array<Record<string, string>>>[
    { 'x-signature-v2': 'a'.repeat(64) },
    { 'x-signature-simple': 'a'.repeat(64) },
    { 'x-signature': 'a'.repeat(64), 'x-signature-v2': 'b'.repeat(64) },
  ]) {
    t.match(
      verify('s'.repeat(32), 0, deep, headers),
      { ok: false, reason: 'too_deep' },
      Object.keys(headers).join('+'),
    );
  }
  t.match(
    verify('s'.repeat(32), 0, deep, { 'x-signature': 'a'.repeat(64) }),
    { ok: false, reason: 'bad_signature' },
    'raw MAC alone never parses',
  );
});

t.test('a source over its failure budget gets the raw MAC only', async (t) => {
  const c = didit.cases.unicode_names!;
  t.match(
    verifyWebhookSignature({
      rawBody: Buffer.from(c.body),
      headers: { 'x-signature': c.signatures.raw, 'x-signature-v2': c.signatures.v2 },
      secrets: [didit.secret],
      nowS: didit.timestamp,
      toleranceS: 300,
      allowReparse: false,
    }),
    { ok: true, scheme: 'raw' },
  );
  t.match(
    verifyWebhookSignature({
      rawBody: Buffer.from(JSON.stringify(JSON.parse(c.body))),
      headers: { 'x-signature': c.signatures.raw, 'x-signature-v2': c.signatures.v2 },
      secrets: [didit.secret],
      nowS: didit.timestamp,
      toleranceS: 300,
      allowReparse: false,
    }),
    { ok: false, reason: 'bad_signature' },
  );
});
