import t from 'tap';
import { checkApiTokens, tokenMatcher } from '../../src/routes/auth.js';

const TOKENS = ['a-token-of-at-least-sixteen-characters', 'second-token-0123456789', 'ünïcödé-tökén-€-0123456789'];

t.test(
  'a presented token matches only the token it equals: every position, character, prefix and extension',
  async (t) => {
    const match = tokenMatcher(TOKENS);
    for (const [index, token] of TOKENS.entries()) t.equal(match(token), index, `token ${index} matches itself`);
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

t.test('a value cut at the width never matches: multi-byte characters against a token ending in NULs', async (t) => {
  // Only a programmatic token list can hold NULs (environment variables cannot, and API_TOKENS refuses
  // control characters): the length field is the UTF-8 length, so a cut character is told apart.
  const prefix = 'abcdefghijklmnop';
  for (const [token, presented] of [
    [`${prefix}\u0000`, `${prefix}é`],
    [`${prefix}\u0000\u0000`, `${prefix}😀`],
    [`${prefix}\u0000\u0000\u0000`, `${prefix}😀x`],
    [`${prefix}\u0000`, `${prefix}€`],
  ] as const)
    t.equal(tokenMatcher([token])(presented), -1, `${JSON.stringify(presented)} against ${JSON.stringify(token)}`);
});

t.test('API_TOKENS refuses control characters in a token', async (t) => {
  for (const c of ['\u0000', '\u0001', '\u001f', '\u007f'])
    t.equal(
      checkApiTokens(`svc:abcdefghijklmnop${c}qrs`).tokens.length,
      0,
      `U+${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  t.equal(checkApiTokens('svc:abcdefghijklmnop-qrs').tokens.length, 1, 'a plain token is taken');
});
