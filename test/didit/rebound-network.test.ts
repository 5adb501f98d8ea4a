import t from 'tap';
import { takenOnBoundNetwork } from '../../src/didit/webhook-handler.js';
import { onTrustNetwork, parseClientIp, trustNetworkId } from '../../src/signals/ip.js';
import { pseudonymiserOf } from '../../src/store/pseudonymise.js';

// Where Didit's IP analysis says a re-bound session's selfie was taken, in every form it might write
// an address, against the network the session was re-bound to (src/didit/README.md, re-binding).
const ids = pseudonymiserOf('rn:rebound-network-test-key-0123456789');
const onNetwork = onTrustNetwork(ids);
const bound = (ip: string) => trustNetworkId(ids, parseClientIp(ip));
const v3 = (...entries: unknown[]) => ({ ip_analyses: entries });
const at = (ip: unknown) => ({ node_id: 'feature_ip_1', status: 'Approved', ip_address: ip });

t.test('the same network in any spelling is "yes"', async (t) => {
  const cases: Array<[string, string, unknown]> = [
    ['IPv4 itself', '203.0.113.9', v3(at('203.0.113.9'))],
    ['IPv4-mapped IPv6', '203.0.113.9', v3(at('::ffff:203.0.113.9'))],
    ['well-known NAT64', '203.0.113.9', v3(at('64:ff9b::cb00:7109'))],
    ['another address of the /64', '2001:db8:1:2::1', v3(at('2001:DB8:1:2:ffff::9'))],
    ['v1/v2 singular ip_analysis', '203.0.113.9', { ip_analysis: at('203.0.113.9') }],
    ['two analyses, both on it', '203.0.113.9', v3(at('203.0.113.9'), at('::ffff:203.0.113.9'))],
  ];
  for (const [name, grant, decision] of cases)
    t.equal(takenOnBoundNetwork(decision, bound(grant), onNetwork), 'yes', name);
});

t.test('another network, or a network many clients share, is "no"', async (t) => {
  const cases: Array<[string, string, unknown]> = [
    ['another IPv4 of the same /24', '203.0.113.9', v3(at('203.0.113.10'))],
    ['another /64', '2001:db8:1:2::1', v3(at('2001:db8:1:3::1'))],
    ['one of two analyses elsewhere', '203.0.113.9', v3(at('203.0.113.9'), at('198.51.100.7'))],
    ['SIIT form in ::/64', '::ffff:0:cb00:7109', v3(at('::ffff:0:cb00:7109'))],
    ['local-use NAT64 (64:ff9b:1::/48)', '64:ff9b:1::cb00:7109', v3(at('64:ff9b:1::cb00:7109'))],
    ['an address with a port', '203.0.113.9', v3(at('203.0.113.9:443'))],
    ['a zone id', 'fe80::1', v3(at('fe80::1%eth0'))],
  ];
  for (const [name, grant, decision] of cases)
    t.equal(takenOnBoundNetwork(decision, bound(grant), onNetwork), 'no', name);
});

t.test(
  'nothing readable, or an unreadable entry beside a readable one, is "unknown" (held, never trusted)',
  async (t) => {
    const grant = bound('203.0.113.9');
    const cases: Array<[string, unknown]> = [
      ['no decision', undefined],
      ['no analyses', {}],
      ['an empty list', v3()],
      ['null list', { ip_analyses: null }],
      ['a null entry beside a matching one', v3(null, at('203.0.113.9'))],
      ['a number for an address', v3(at(3405803785))],
      ['an empty address beside a matching one', v3(at(''), at('203.0.113.9'))],
      ['an object instead of a list', { ip_analyses: { ip_address: '203.0.113.9' } }],
    ];
    for (const [name, decision] of cases) t.equal(takenOnBoundNetwork(decision, grant, onNetwork), 'unknown', name);
    t.equal(takenOnBoundNetwork(v3(at('203.0.113.9')), grant, undefined), 'unknown', 'no network check wired: unknown');
  },
);

t.test('during an ID_HASH_KEY rotation a grant made under the previous key still matches', async (t) => {
  const old = pseudonymiserOf('ol:rebound-network-old-key-0123456789');
  const rotating = pseudonymiserOf('nw:rebound-network-new-key-0123456789', 'ol:rebound-network-old-key-0123456789');
  const grant = trustNetworkId(old, parseClientIp('203.0.113.9'));
  t.equal(takenOnBoundNetwork(v3(at('203.0.113.9')), grant, onTrustNetwork(rotating)), 'yes');
  t.equal(takenOnBoundNetwork(v3(at('203.0.113.10')), grant, onTrustNetwork(rotating)), 'no');
});
