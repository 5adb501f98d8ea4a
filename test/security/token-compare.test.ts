import t from 'tap';
import { tokenMatcher } from '../../src/routes/auth.js';

const TOKENS = ['a-token-of-at-least-sixteen-characters', 'second-token-0123456789', 'ünïcödé-tökén-€-0123456789'];

t.test(
  'a presented token matches only the token it equals: every position, character, prefix and extension',
  async (t) => {
    const match = tokenMatcher(TOKENS);
    TOKENS.forEach((token, index) => t.equal(match(token), index, `token ${index} matches itself`));
    const replacements = ['0', 'a', 'Z', '-', '\u0000', '\u00ff', '€', '😀', '\ud800'];
    let tried = 0;
    let accepted = 0;
    for (const token of TOKENS) {
      for (let i = 0; i < token.length; i++)
        for (const c of replacements) {
          if (c === token[i]) continue;
          tried += 1;
          if (match(`${token.slice(0, i)}${c}${token.slice(i + 1)}`) !== -1) accepted += 1;
          tried += 1;
          if (match(`${token.slice(0, i)}${c}${token.slice(i)}`) !== -1) accepted += 1;
        }
      for (let length = 0; length < token.length; length++) {
        tried += 1;
        if (match(token.slice(0, length)) !== -1) accepted += 1;
      }
      for (const tail of ['x', '\u0000', '€', 'x'.repeat(1000)]) {
        tried += 1;
        if (match(`${token}${tail}`) !== -1) accepted += 1;
      }
    }
    t.equal(accepted, 0, `none of ${tried} substitutions, insertions, prefixes and extensions matches`);
  },
);

t.test('what is never a token: empty, padding, a very long header, another encoding of the same text', async (t) => {
  const match = tokenMatcher(TOKENS);
  t.equal(match(''), -1, 'empty');
  t.equal(match('\u0000'.repeat(40)), -1, 'NUL padding');
  t.equal(match('a'.repeat(100_000)), -1, 'a 100,000-character value');
  // A header arrives as latin1: UTF-8 bytes of a non-ASCII token read as latin1 are another string.
  const latin1 = Buffer.from(TOKENS[2]!, 'utf8').toString('latin1');
  t.equal(match(latin1), -1, 'the UTF-8 bytes of a token read as latin1');
  t.equal(tokenMatcher([])('anything-at-all-0123456789'), -1, 'no tokens configured');
});

t.test('a duplicate spelling never matches two tokens: the index is of the one it equals', async (t) => {
  const match = tokenMatcher(['aaaaaaaaaaaaaaaa', 'aaaaaaaaaaaaaaaab', 'aaaaaaaaaaaaaaa']);
  t.equal(match('aaaaaaaaaaaaaaaa'), 0);
  t.equal(match('aaaaaaaaaaaaaaaab'), 1);
  t.equal(match('aaaaaaaaaaaaaaa'), 2);
});
