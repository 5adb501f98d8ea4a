import { ReadCache } from '../lib/read-cache.js';
import { Reader, type Response } from 'maxmind';
import type { Mutable } from '../lib/mutable.js';

export const GEO_DATABASES = ['city', 'asn', 'anon', 'connection'] as const;
export type GeoDatabase = (typeof GEO_DATABASES)[number];

export interface GeoResult {
  /** ISO country code; "" when the address is in no network of the database (private ranges). */
  readonly country?: string;
  /** The city's English name, when the database knows it: for "was this you?" messages only. */
  readonly city?: string;
  readonly latitude?: number;
  readonly longitude?: number;
  readonly accuracyKm?: number;
  readonly asn?: number;
  readonly asnOrg?: string;
  readonly connectionType?: string;
  readonly anonymous?: boolean;
  /** Databases that are not loaded or failed on this lookup: their signals are unknown. */
  readonly failed: readonly GeoDatabase[];
}

export interface LoadedDatabase {
  readonly reader: Reader<Response>;
  readonly path: string;
  /** Seconds since 1970 (MaxMind's `build_epoch`). */
  readonly buildEpoch: number;
  readonly type: string;
}

export interface GeoIp {
  lookup(ip: string): GeoResult;
  /** Swap in a new reader (hot swap); the previous one served every lookup until now. */
  replace(db: GeoDatabase, loaded: LoadedDatabase): void;
  loaded(): ReadonlyMap<GeoDatabase, LoadedDatabase>;
}

/** Builds a reader from file bytes and proves it can answer before anyone swaps it in. */
export function readerFromBuffer(buffer: Buffer, path: string): LoadedDatabase {
  // Decoded records are cached by data offset (what maxmind.open does): a City record decodes in
  // about 10 µs, a cache hit in well under one. The cache belongs to this reader and dies with it.
  const reader = new Reader<Response>(buffer, { cache: new ReadCache<number, Response>(10_000) as never });
  reader.get('1.1.1.1');
  reader.get('2001:4860::1');
  const metadata = reader.metadata;
  // maxmind hands the build time over as a Date; the data-age gauge and its alert count in seconds.
  const buildEpoch = Math.floor(Number(metadata.buildEpoch) / 1000) || 0;
  return { reader, path, buildEpoch, type: metadata.databaseType };
}

interface CityRecord {
  city?: { names?: { en?: string } };
  country?: { iso_code?: string };
  registered_country?: { iso_code?: string };
  location?: { latitude?: number; longitude?: number; accuracy_radius?: number };
}
interface AsnRecord {
  autonomous_system_number?: number;
  autonomous_system_organization?: string;
}
interface AnonRecord {
  is_anonymous?: boolean;
}
interface ConnectionRecord {
  connection_type?: string;
}

export function createGeoIp(
  initial: Partial<Record<GeoDatabase, LoadedDatabase>>,
  configured: readonly GeoDatabase[] = ['city', 'asn'],
): GeoIp {
  const databases = new Map<GeoDatabase, LoadedDatabase>(
    Object.entries(initial) as Array<[GeoDatabase, LoadedDatabase]>,
  );

  const read = <T>(db: GeoDatabase, ip: string, failed: GeoDatabase[]): T | null | undefined => {
    const loaded = databases.get(db);
    if (!loaded) {
      if (configured.includes(db)) failed.push(db);
      return undefined;
    }
    try {
      return loaded.reader.get(ip) as T | null;
    } catch {
      // A corrupt tree throws for some addresses only; that lookup is unknown, the service goes on.
      failed.push(db);
      return undefined;
    }
  };

  return {
    lookup(ip) {
      const failed: GeoDatabase[] = [];
      const city = read<CityRecord>('city', ip, failed);
      const asn = read<AsnRecord>('asn', ip, failed);
      const anon = read<AnonRecord>('anon', ip, failed);
      const connection = read<ConnectionRecord>('connection', ip, failed);
      const result: Mutable<GeoResult> = { failed };
      if (city !== undefined) {
        result.country = city?.country?.iso_code ?? city?.registered_country?.iso_code ?? '';
        const cityName = city?.city?.names?.en;
        if (cityName) result.city = cityName;
        const location = city?.location;
        if (location?.latitude !== undefined && location.longitude !== undefined) {
          result.latitude = location.latitude;
          result.longitude = location.longitude;
          result.accuracyKm = location.accuracy_radius ?? 1000;
        }
      }
      if (asn?.autonomous_system_number !== undefined) {
        result.asn = asn.autonomous_system_number;
        result.asnOrg = asn.autonomous_system_organization ?? '';
      }
      if (anon !== undefined) result.anonymous = anon?.is_anonymous === true;
      if (connection !== undefined) result.connectionType = connection?.connection_type ?? '';
      return result;
    },
    replace(db, loaded) {
      databases.set(db, loaded);
    },
    loaded() {
      return databases;
    },
  };
}
