import { createServer, type Socket } from 'node:net';

function parse(buf: Buffer): { cmds: string[][]; rest: Buffer } {
  const cmds: string[][] = [];
  let i = 0;
  const s = buf.toString('latin1');
  outer: while (i < s.length) {
    if (s[i] !== '*') throw new Error(`bad ${s.slice(i, i + 20)}`);
    let e = s.indexOf('\r\n', i);
    if (e < 0) break;
    const n = Number(s.slice(i + 1, e));
    let p = e + 2;
    const args: string[] = [];
    for (let k = 0; k < n; k++) {
      e = s.indexOf('\r\n', p);
      if (e < 0) break outer;
      const len = Number(s.slice(p + 1, e));
      if (s.length < e + 2 + len + 2) break outer;
      args.push(s.slice(e + 2, e + 2 + len));
      p = e + 2 + len + 2;
    }
    cmds.push(args);
    i = p;
  }
  return { cmds, rest: Buffer.from(s.slice(i), 'latin1') };
}
const bulk = (x: string) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`;

/**
 * A one-node Redis Cluster speaking RESP on loopback, for the replies a real cluster gives only in
 * passing (a slot being migrated, a cluster losing its quorum): its first `fail` GET or SET commands
 * answer `errorReply` (`TRYAGAIN …`, `CLUSTERDOWN …`), later ones succeed; it owns every slot.
 */
export async function startFakeClusterNode(errorReply: string, fail: number) {
  let failed = 0;
  const log: string[] = [];
  const sockets = new Set<Socket>();
  let port = 0;
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    let pending: Buffer = Buffer.alloc(0);
    let inMulti = false,
      dirty = false;
    sock.on('data', (d) => {
      const { cmds, rest } = parse(Buffer.concat([pending, d]));
      pending = rest;
      let out = '';
      for (const a of cmds) {
        const name = a[0]!.toLowerCase();
        log.push(a.join(' '));
        if (name === 'info') out += bulk('# Server\r\nloading:0\r\n');
        else if (name === 'cluster' && a[1]!.toLowerCase() === 'slots')
          out += `*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n${bulk('127.0.0.1')}:${port}\r\n${bulk('node1')}`;
        else if (name === 'cluster' && a[1]!.toLowerCase() === 'info') out += bulk('cluster_state:ok\r\n');
        else if (name === 'multi') {
          inMulti = true;
          dirty = false;
          out += '+OK\r\n';
        } else if (name === 'exec') {
          inMulti = false;
          out += dirty ? '-EXECABORT Transaction discarded because of previous errors.\r\n' : '*1\r\n+OK\r\n';
        } else if (name === 'get' || name === 'set') {
          if (failed < fail) {
            failed++;
            dirty = true;
            out += `-${errorReply}\r\n`;
          } else out += inMulti ? '+QUEUED\r\n' : name === 'get' ? bulk('v') : '+OK\r\n';
        } else out += '+OK\r\n';
      }
      if (out) sock.write(out);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as { port: number }).port;
  return {
    port,
    log,
    stop: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
