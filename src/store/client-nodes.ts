import { Cluster, type Redis } from 'ioredis';

/**
 * Calls `apply` with each connection object of the client: a single server's or a Sentinel-resolved
 * master's (one object across reconnects and failovers), or every Cluster node's, those it has now
 * and each one the cluster discovers later ('+node').
 */
export function onEveryNode(client: Redis | Cluster, apply: (node: Redis) => void): void {
  if (client instanceof Cluster) {
    for (const node of client.nodes()) apply(node);
    client.on('+node', apply);
  } else apply(client);
}
