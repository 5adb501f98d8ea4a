import { createHmac } from 'node:crypto';
import t from 'tap';
import { createPseudonymiser, parseHashKey } from '../../src/store/pseudonymise.js';

const ids = createPseudonymiser(parseHashKey('k1:0123456789abcdefghijklmnop'));
const other = createPseudonymiser(parseHashKey('k2:zyxwvutsrqponmlkjihgfedcba'));

t.test('pseudonyms are keyed HMACs with the key id in front', async (t) => {
  const a = ids.id('ip', '203.0.113.77');
  t.match(a, /^k1\.[A-Za-z0-9_-]{22}$/);
  t.equal(ids.id('ip', '203.0.113.77'), a, 'stable');
  t.not(ids.id('device', '203.0.113.77'), a, 'kinds are separated');
  t.not(other.id('ip', '203.0.113.77').slice(3), a.slice(3), 'another key, another pseudonym');
});

t.test('a pseudonym is the keyed HMAC of kind and value, cached or not, for every kind and value shape', async (t) => {
  // Pseudonyms are stored: the cache and the way the string is built must never change one.
  const secret = '0123456789abcdefghijklmnop';
  const expected = (kind: string, value: string) =>
    `k1.${createHmac('sha256', secret).update(kind).update('\0').update(value).digest('base64url').slice(0, 22)}`;
  const values = [
    'a',
    '203.0.113.77',
    '2001:db8::1',
    '2001:db8:1234::/48',
    'user-0123456789abcdef',
    `device-${'x'.repeat(300)}`,
    'Zoë-ユーザー-👩‍💻',
    '\0',
    ` ${'y'.repeat(12)}`,
  ];
  for (const kind of ['user', 'device', 'ip', 'net'] as const) {
    for (const value of values) {
      const fresh = createPseudonymiser(parseHashKey(`k1:${secret}`));
      const first = fresh.id(kind, value);
      t.equal(first, expected(kind, value), `${kind} ${JSON.stringify(value).slice(0, 24)}: computed`);
      t.equal(fresh.id(kind, value), first, `${kind} ${JSON.stringify(value).slice(0, 24)}: cached`);
      // The same value under another kind is never served from the first kind's cache.
      for (const other of ['user', 'device', 'ip', 'net'] as const) {
        if (other !== kind) t.equal(fresh.id(other, value), expected(other, value));
      }
    }
  }
});

t.test('pseudonyms stored by earlier versions are made again byte for byte, for kids of every length', async (t) => {
  // Recorded once from `<kid>.${createHmac(...).digest('base64url').slice(0, 22)}`: the cache and the
  // way the string is built (the MAC written after a prefix of the kid's own length) must not move one.
  const pinned: Array<[string, string, 'user' | 'device' | 'net', string, string]> = [
    ['k', '0123456789abcdefghijklmnop', 'user', 'alice', 'k.m0-mu0hHXx_3vL2Z2gSR_z'],
    ['a-b_c-d_', 'zyxwvutsrqponmlkjihgfedcba', 'device', 'device-0123456789abcdef', 'a-b_c-d_.-8VUp_K31yrpK1sYdlh3ks'],
    ['_', 'another-secret-of-enough-length', 'net', '2001:db8:1234::/48', '_.FdqrS7TqaeEB8QUQ18mIJN'],
  ];
  for (const [kid, secret, kind, value, expected] of pinned) {
    const pseudonymiser = createPseudonymiser(parseHashKey(`${kid}:${secret}`));
    t.equal(pseudonymiser.id(kind, value), expected, `${kid}: computed`);
    t.equal(pseudonymiser.id(kind, value), expected, `${kid}: cached`);
    t.ok(pseudonymiser.matches(kind, value, expected), `${kid}: matches`);
  }
});

t.test('a key id outside what ID_HASH_KEY accepts is refused however the pseudonymiser is made', async (t) => {
  for (const kid of ['', 'kā', 'k.1', 'k:1', 'toolong12', 'k 1']) {
    t.throws(() => createPseudonymiser({ kid, secret: '0123456789abcdefghijklmnop' }), /key id/, JSON.stringify(kid));
  }
});

t.test('sealed values open only under the same key and untampered', async (t) => {
  const sealed = ids.seal('https://verify.didit.me/session/3FaJ9wLqX2Mz');
  t.notOk(sealed.includes('3FaJ9wLqX2Mz'));
  t.equal(ids.unseal(sealed), 'https://verify.didit.me/session/3FaJ9wLqX2Mz');
  t.equal(other.unseal(sealed), undefined);
  const flipped = sealed.slice(0, -2) + (sealed.endsWith('A') ? 'B' : 'A') + sealed.slice(-1);
  t.equal(ids.unseal(flipped), undefined);
});

t.test('weak or malformed hash keys are refused', async (t) => {
  t.throws(() => parseHashKey('nokid'));
  t.throws(() => parseHashKey('k1:short'));
  t.throws(() => parseHashKey('bad kid!:0123456789abcdefghijklmnop'));
});

t.test('rotation: the previous key stays readable, never written', async (t) => {
  const rotated = createPseudonymiser(
    parseHashKey('k2:zyxwvutsrqponmlkjihgfedcba'),
    parseHashKey('k1:0123456789abcdefghijklmnop'),
  );
  t.equal(rotated.id('user', 'alice'), other.id('user', 'alice'), 'ids are made under the current key');
  t.equal(rotated.previous?.id('user', 'alice'), ids.id('user', 'alice'), 'the previous pseudonym is known');
  t.ok(rotated.matches('user', 'alice', ids.id('user', 'alice')), 'a previous pseudonym matches its value');
  t.ok(rotated.matches('user', 'alice', other.id('user', 'alice')), 'a current one too');
  // The class of near misses: another value, another kind, another key, a key id in front of the wrong MAC.
  t.notOk(rotated.matches('user', 'bob', ids.id('user', 'alice')));
  t.notOk(rotated.matches('device', 'alice', ids.id('user', 'alice')));
  const third = createPseudonymiser(parseHashKey('k3:a-third-key-nobody-rotated-from'));
  t.notOk(rotated.matches('user', 'alice', third.id('user', 'alice')));
  t.notOk(
    rotated.matches('user', 'alice', `k1.${other.id('user', 'alice').slice(3)}`),
    'the current MAC under the previous key id does not match',
  );
  t.notOk(ids.matches('user', 'alice', other.id('user', 'alice')), 'without a rotation only the current key matches');
  const sealedBefore = ids.seal('https://verify.didit.me/session/before');
  t.equal(
    rotated.unseal(sealedBefore),
    'https://verify.didit.me/session/before',
    'values sealed before the rotation still open',
  );
  t.match(rotated.seal('x'), /^k2\./, 'new values are sealed under the current key');
  t.equal(rotated.unseal(third.seal('x')), undefined);
  t.throws(
    () =>
      createPseudonymiser(parseHashKey('k1:zyxwvutsrqponmlkjihgfedcba'), parseHashKey('k1:0123456789abcdefghijklmnop')),
    /differ/,
    'the same key id is refused',
  );
  t.throws(
    () =>
      createPseudonymiser(parseHashKey('k2:0123456789abcdefghijklmnop'), parseHashKey('k1:0123456789abcdefghijklmnop')),
    /differ/,
    'the same secret is refused',
  );
});
