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
