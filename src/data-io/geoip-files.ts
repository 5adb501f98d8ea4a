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

/** The files to open: the operator's, or (neither city nor ASN set) the embedded MaxMind test databases. */
export function geoipPaths(
  files: { dataDir: string } & Partial<Record<GeoDatabase, string | undefined>>,
): Partial<Record<GeoDatabase, string>> {
  const embedded = !files.city && !files.asn;
  const paths: Partial<Record<GeoDatabase, string>> = {};
  for (const db of ['city', 'asn', 'anon', 'connection'] as const) {
    const file = files[db] ?? (embedded ? path.join(files.dataDir, EMBEDDED_GEOIP[db]) : undefined);
    if (file) paths[db] = file;
  }
  return paths;
}
