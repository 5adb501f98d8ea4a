import t from 'tap';
import { startTestService } from '../helpers/service.js';

/** `velocity.ip_decides_1m` counts an IPv6 subscriber's whole /64 together: rotating addresses in it evades nothing. */
t.test(
  'velocity.ip_decides_1m: every address of one IPv6 /64 counts together; another /64 and IPv4 addresses do not',
  async (t) => {
    const service = await startTestService();
    t.teardown(() => service.close());
    const decide = async (ip: string, user: string) => {
      const reply = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', ...service.auth },
        payload: { user_id: user, device_id: 'd', ip },
      });
      t.equal(reply.statusCode, 200);
      return Number(reply.json().signals['velocity.ip_decides_1m']);
    };
    // The class: low, high and random interface ids, written compressed and expanded, all in 2001:db8:aa:bb::/64.
    const inside = [
      '2001:db8:aa:bb::1',
      '2001:db8:aa:bb::2',
      '2001:db8:aa:bb:ffff:ffff:ffff:ffff',
      '2001:0db8:00aa:00bb:1234:5678:9abc:def0',
      '2001:db8:aa:bb:0:0:0:1',
    ];
    for (let i = 0; i < 20; i++)
      inside.push(
        `2001:db8:aa:bb:${((i * 7919) % 65536).toString(16)}:${((i * 104729) % 65536).toString(16)}::${(i + 3).toString(16)}`,
      );
    let count = 0;
    for (const [i, ip] of inside.entries())
      t.equal(await decide(ip, `v6-user-${i}`), ++count, `${ip} counts with the rest of its /64`);
    t.equal(await decide('2001:db8:aa:bc::1', 'other-64'), 1, 'the neighbouring /64 has its own count');
    t.equal(await decide('2001:db8:aa:bb::1', 'again'), count + 1, 'back in the first /64: its count went on');
    // IPv4 is unchanged: per address, not per /24.
    t.equal(await decide('89.160.20.130', 'v4-a'), 1);
    t.equal(await decide('89.160.20.130', 'v4-b'), 2, 'the same IPv4 address counts up');
    t.equal(await decide('89.160.20.131', 'v4-c'), 1, 'a neighbouring IPv4 address counts apart');
  },
);
