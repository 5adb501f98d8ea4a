import type { ClientIp } from './ip.js';
import type { RangeTable } from './ip-ranges.js';
import type { Mutable } from '../lib/mutable.js';

export const LIST_NAMES = ['tor', 'vpn', 'relay', 'hosting', 'hosting_asn'] as const;
export type ListName = (typeof LIST_NAMES)[number];

export interface ListSnapshot {
  readonly name: ListName;
  readonly table?: RangeTable;
  readonly asns?: ReadonlySet<number>;
  /** The date the data describes (upstream build time), epoch ms: what staleness is measured from. */
  readonly asOf: number;
  readonly entries: number;
  readonly source: string;
}

export interface ListVerdict {
  readonly tor?: boolean;
  readonly vpn?: boolean;
  readonly relay?: boolean;
  readonly hosting?: boolean;
  /** Lists that were missing or stale for this lookup. */
  readonly unavailable: readonly ListName[];
}

export interface IpLists {
  check(ip: ClientIp, asn: number | undefined, now: number): ListVerdict;
  /** Swap one list atomically (refresh); the previous snapshot keeps serving until this call. */
  replace(snapshot: ListSnapshot): void;
  snapshots(): readonly ListSnapshot[];
  /** Names of lists older than their maximum age at `now`. */
  stale(now: number): ListName[];
}

export interface IpListsOptions {
  readonly snapshots: readonly ListSnapshot[];
  /** Maximum age per list in ms; 0 or absent disables the check for that list. */
  readonly maxAgeMs?: Partial<Record<ListName, number>>;
}

export function createIpLists(options: IpListsOptions): IpLists {
  const current = new Map<ListName, ListSnapshot>(options.snapshots.map((s) => [s.name, s]));
  const maxAge = options.maxAgeMs ?? {};

  const usable = (name: ListName, now: number): ListSnapshot | undefined => {
    const snapshot = current.get(name);
    if (!snapshot || snapshot.entries === 0) return undefined;
    const limit = maxAge[name];
    if (limit && now - snapshot.asOf > limit) return undefined;
    return snapshot;
  };

  return {
    check(ip, asn, now) {
      // Runs on every decide: no closures, no spread objects.
      const unavailable: ListName[] = [];
      const torList = usable('tor', now);
      const relayList = usable('relay', now);
      const vpnList = usable('vpn', now);
      const hostingList = usable('hosting', now);
      const asnList = usable('hosting_asn', now);
      if (!torList) unavailable.push('tor');
      if (!relayList) unavailable.push('relay');
      if (!vpnList) unavailable.push('vpn');
      if (!hostingList) unavailable.push('hosting');
      if (!asnList) unavailable.push('hosting_asn');
      const verdict: Mutable<ListVerdict> = { unavailable };
      const relay = relayList ? relayList.table?.hasKey(ip.key) === true : undefined;
      if (torList) verdict.tor = torList.table?.hasKey(ip.key) === true;
      if (relay !== undefined) verdict.relay = relay;
      if (vpnList && relay !== undefined) verdict.vpn = vpnList.table?.hasKey(ip.key) === true && !relay;
      // A hosting ASN is positive evidence even when the range list is unavailable; absence is not.
      const hostingAsn = asn !== undefined && asnList?.asns?.has(asn) === true;
      if (hostingAsn || hostingList?.table?.hasKey(ip.key) === true) verdict.hosting = true;
      else if (hostingList) verdict.hosting = false;
      return verdict;
    },
    replace(snapshot) {
      current.set(snapshot.name, snapshot);
    },
    snapshots() {
      return [...current.values()];
    },
    stale(now) {
      return LIST_NAMES.filter((name) => current.has(name) && !usable(name, now));
    },
  };
}
