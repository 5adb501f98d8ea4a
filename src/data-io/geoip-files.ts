import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { readerFromBuffer, type GeoDatabase, type LoadedDatabase } from '../signals/geoip.js';

export const EMBEDDED_GEOIP: Record<GeoDatabase, string> = {
  city: 'maxmind-test/GeoIP2-City-Test.mmdb',
  asn: 'maxmind-test/GeoLite2-ASN-Test.mmdb',
  anon: 'maxmind-test/GeoIP2-Anonymous-IP-Test.mmdb',
  connection: 'maxmind-test/GeoIP2-Connection-Type-Test.mmdb',
};

/** Opens one database file; a missing, empty or corrupt file is an error the caller logs and survives. */
export async function openDatabase(file: string): Promise<LoadedDatabase> {
  const buffer = await readFile(file);
  if (buffer.length === 0) throw new Error('empty database file');
  return readerFromBuffer(buffer, file);
}

export function geoipPaths(config: { DATA_DIR: string; GEOIP_CITY_DB?: string | undefined; GEOIP_ASN_DB?: string | undefined; GEOIP_ANON_DB?: string | undefined; GEOIP_CONNECTION_DB?: string | undefined }): Partial<Record<GeoDatabase, string>> {
  const embedded = !config.GEOIP_CITY_DB && !config.GEOIP_ASN_DB;
  const pick = (own: string | undefined, db: GeoDatabase) => own ?? (embedded ? path.join(config.DATA_DIR, EMBEDDED_GEOIP[db]) : undefined);
  const paths: Partial<Record<GeoDatabase, string>> = {};
  const entries: Array<[GeoDatabase, string | undefined]> = [
    ['city', pick(config.GEOIP_CITY_DB, 'city')],
    ['asn', pick(config.GEOIP_ASN_DB, 'asn')],
    ['anon', pick(config.GEOIP_ANON_DB, 'anon')],
    ['connection', pick(config.GEOIP_CONNECTION_DB, 'connection')],
  ];
  for (const [db, file] of entries) if (file) paths[db] = file;
  return paths;
}
