import type { ClientIp } from './ip.js';
import type { RangeTable } from './ip-ranges.js';

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
      const unavailable: ListName[] = [];
      const lookup = (name: ListName): boolean | undefined => {
        const snapshot = usable(name, now);
        if (!snapshot) {
          unavailable.push(name);
          return undefined;
        }
        return snapshot.table?.hasKey(ip.key) ?? false;
      };
      const tor = lookup('tor');
      const relay = lookup('relay');
      const vpnRange = lookup('vpn');
      const hostingRange = lookup('hosting');
      const asnList = usable('hosting_asn', now);
      if (!asnList) unavailable.push('hosting_asn');
      const hostingAsn = asn !== undefined && asnList?.asns?.has(asn) === true;
      const vpn = vpnRange === undefined || relay === undefined ? undefined : vpnRange && !relay;
      // A hosting ASN is positive evidence even when the range list is unavailable; absence is not.
      const hosting = hostingRange === true || hostingAsn ? true : hostingRange === undefined ? undefined : false;
      return {
        ...(tor === undefined ? {} : { tor }),
        ...(vpn === undefined ? {} : { vpn }),
        ...(relay === undefined ? {} : { relay }),
        ...(hosting === undefined ? {} : { hosting }),
        unavailable,
      };
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
