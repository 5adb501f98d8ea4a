import { hash } from 'node:crypto';
import t from 'tap';
import { sameDigest } from '../../src/routes/auth.js';

t.test('a token digest matches only itself: every position, every other character, every length', async (t) => {
  const digest = hash('sha256', 'a-token-of-at-least-sixteen-characters', 'hex');
  t.ok(sameDigest(digest, `${digest}`), 'equal digests match');
  let accepted = 0;
  let tried = 0;
  for (let i = 0; i < digest.length; i++)
    for (const c of '0123456789abcdefABCDEF\u0000\u00ff') {
      if (c === digest[i]) continue;
      tried += 1;
      if (sameDigest(digest, `${digest.slice(0, i)}${c}${digest.slice(i + 1)}`)) accepted += 1;
    }
  t.equal(accepted, 0, `none of ${tried} one-character changes matches`);
  for (let length = 0; length < digest.length; length++)
    t.notOk(sameDigest(digest, digest.slice(0, length)), `a ${length}-character prefix does not match`);
  t.notOk(sameDigest(digest, `${digest}0`), 'nor a longer string');
  t.notOk(sameDigest(`${digest}0`, digest), 'in either order');
});
