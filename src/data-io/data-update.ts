#!/usr/bin/env node
/**
 * `npm run data:update`: fresh GeoLite2 databases (MAXMIND_ACCOUNT_ID + MAXMIND_LICENSE_KEY) and
 * fresh IP lists, each downloaded, validated and swapped in by atomic rename, so a running service
 * (which watches these files) picks them up and a failed download changes nothing. Lists use
 * conditional GET (ETag / Last-Modified) and keep the last good copy.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readerFromBuffer } from '../signals/geoip.js';
import { snapshotFromText } from './list-files.js';
import type { ListName } from '../signals/ip-lists.js';

export interface UpdateSettings {
  readonly dataDir: string;
  readonly maxmindBaseUrl: string;
  readonly accountId?: string;
  readonly licenseKey?: string;
  /** edition → target path */
  readonly editions: Readonly<Record<string, string>>;
  /** list → URL; the list's first file in lists.json is replaced */
  readonly listUrls: Partial<Record<ListName, string>>;
  readonly fetch?: typeof fetch;
  readonly now?: () => number;
  /** A list smaller than this is refused as truncated or wrong. */
  readonly minListEntries?: number;
}

export interface UpdateReport {
  readonly updated: string[];
  readonly unchanged: string[];
  readonly failed: Array<{ name: string; reason: string }>;
}

async function atomicWrite(target: string, bytes: Buffer | string): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = `${target}.tmp-${process.pid}-${Date.now()}`;
  await writeFile(temp, bytes);
  await rename(temp, target);
}

/** The one `.mmdb` member of a MaxMind `tar.gz` (ustar: 512-byte headers, size in octal). */
export function mmdbFromTarGz(archive: Buffer): Buffer {
  const tar = gunzipSync(archive);
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const name = tar
      .subarray(offset, offset + 100)
      .toString('utf8')
      .replace(/\0.*$/s, '');
    if (!name) break;
    const size = parseInt(
      tar
        .subarray(offset + 124, offset + 136)
        .toString('utf8')
        .replace(/\0.*$/s, '')
        .trim() || '0',
      8,
    );
    if (name.endsWith('.mmdb')) return tar.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error('no .mmdb in the archive');
}

/**
 * When the list's data is from: the newest date the list states itself (TorDNSEL's `ExitAddress ip
 * YYYY-MM-DD HH:MM:SS`, or a `# … 2026-11-25T…` header line), else the server's `Last-Modified`.
 * Undefined when neither says: the fetch time is all we know then.
 */
export function sourceDate(
  text: string,
  lastModified: string | null,
): { at: number; from: 'list' | 'last_modified' } | undefined {
  let newest = 0;
  for (const match of text.matchAll(/^(?:ExitAddress \S+ |#.*?)(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})/gm)) {
    const at = Date.parse(`${match[1]}T${match[2]}Z`);
    if (Number.isFinite(at) && at > newest) newest = at;
  }
  if (newest > 0) return { at: newest, from: 'list' };
  const modified = lastModified ? Date.parse(lastModified) : NaN;
  return Number.isFinite(modified) ? { at: modified, from: 'last_modified' } : undefined;
}

export async function updateData(settings: UpdateSettings): Promise<UpdateReport> {
  const doFetch = settings.fetch ?? fetch;
  const report = {
    updated: [] as string[],
    unchanged: [] as string[],
    failed: [] as Array<{ name: string; reason: string }>,
  };

  if (settings.licenseKey) {
    const auth = `Basic ${Buffer.from(`${settings.accountId ?? ''}:${settings.licenseKey}`).toString('base64')}`;
    for (const [edition, target] of Object.entries(settings.editions)) {
      try {
        const response = await doFetch(`${settings.maxmindBaseUrl}/geoip/databases/${edition}/download?suffix=tar.gz`, {
          headers: { authorization: auth },
          signal: AbortSignal.timeout(120_000),
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const mmdb = mmdbFromTarGz(Buffer.from(await response.arrayBuffer()));
        readerFromBuffer(mmdb, target); // proves it opens and answers before it replaces anything
        await atomicWrite(target, mmdb);
        report.updated.push(edition);
      } catch (error) {
        report.failed.push({ name: edition, reason: (error as Error).message });
      }
    }
  }

  const manifestPath = path.join(settings.dataDir, 'lists.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<
    string,
    {
      files: string[];
      format: 'ips' | 'cidrs' | 'asns';
      as_of: string;
      as_of_from?: string;
      source: string;
      etag?: string;
      last_modified?: string;
    }
  >;
  let manifestChanged = false;
  for (const [name, url] of Object.entries(settings.listUrls) as Array<[ListName, string]>) {
    const entry = manifest[name];
    if (!entry || !url) continue;
    try {
      const headers: Record<string, string> = {};
      if (entry.etag) headers['if-none-match'] = entry.etag;
      if (entry.last_modified) headers['if-modified-since'] = entry.last_modified;
      const response = await doFetch(url, { headers, signal: AbortSignal.timeout(60_000) });
      if (response.status === 304) {
        report.unchanged.push(name);
        continue;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const text = await response.text();
      const snapshot = snapshotFromText(name, entry.format, [text], Date.now(), url);
      if (snapshot.entries < (settings.minListEntries ?? 10))
        throw new Error(`only ${snapshot.entries} entries: refused as truncated or wrong`);
      const target = path.join(settings.dataDir, entry.files[0]!);
      await atomicWrite(target, text);
      entry.files = [entry.files[0]!];
      // The age of the data, not of our download: a mirror stuck on an old list must look stale.
      const dated = sourceDate(text, response.headers.get('last-modified'));
      entry.as_of = new Date(dated?.at ?? settings.now?.() ?? Date.now()).toISOString();
      entry.as_of_from = dated?.from ?? 'fetch_time';
      entry.source = `${url} (sha256 ${createHash('sha256').update(text).digest('hex').slice(0, 16)})`;
      const etag = response.headers.get('etag');
      const lastModified = response.headers.get('last-modified');
      if (etag) entry.etag = etag;
      if (lastModified) entry.last_modified = lastModified;
      manifestChanged = true;
      report.updated.push(name);
    } catch (error) {
      report.failed.push({ name, reason: (error as Error).message });
    }
  }
  if (manifestChanged) await atomicWrite(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
  return report;
}

export const DATA_UPDATE_HELP = `usage: npm run data:update    (takes no arguments; settings come from the environment)

Downloads GeoLite2 City and ASN (with MAXMIND_LICENSE_KEY) and the Tor / VPN / hosting / relay lists (from their
*_LIST_URL) into DATA_DIR with conditional GETs; each file is validated, then renamed into place, so a running
service swaps it in or keeps the last good one.

environment:
  DATA_DIR                 where the data lives (default: data)
  MAXMIND_ACCOUNT_ID       MaxMind account id
  MAXMIND_LICENSE_KEY      MaxMind licence key; without it the GeoLite2 databases are skipped
  MAXMIND_BASE_URL         MaxMind download base (default: https://download.maxmind.com)
  GEOIP_CITY_DB            where to write GeoLite2-City (default: DATA_DIR/geolite2/GeoLite2-City.mmdb)
  GEOIP_ASN_DB             where to write GeoLite2-ASN (default: DATA_DIR/geolite2/GeoLite2-ASN.mmdb)
  TOR_LIST_URL, VPN_LIST_URL, HOSTING_LIST_URL, RELAY_LIST_URL   list sources (each optional)

example:
  MAXMIND_ACCOUNT_ID=123456 MAXMIND_LICENSE_KEY=… TOR_LIST_URL=https://… npm run data:update
`;

if (process.argv[1] && /data-update\.(ts|js)$/.test(process.argv[1])) {
  // Run as a command (npm run data:update), not when server.ts imports updateData for its refresh timer.
  const args = process.argv.slice(2);
  if (args.length > 0) {
    const asked = args.some((a) => a === '--help' || a === '-h' || a === 'help');
    if (!asked) process.stderr.write(`unknown argument ${JSON.stringify(args[0])}\n\n`);
    process.stdout.write(DATA_UPDATE_HELP);
    process.exit(asked ? 0 : 2);
  }
  const env = process.env;
  const dataDir = env.DATA_DIR ?? 'data';
  const report = await updateData({
    dataDir,
    maxmindBaseUrl: env.MAXMIND_BASE_URL ?? 'https://download.maxmind.com',
    ...(env.MAXMIND_ACCOUNT_ID ? { accountId: env.MAXMIND_ACCOUNT_ID } : {}),
    ...(env.MAXMIND_LICENSE_KEY ? { licenseKey: env.MAXMIND_LICENSE_KEY } : {}),
    editions: {
      'GeoLite2-City': env.GEOIP_CITY_DB ?? path.join(dataDir, 'geolite2/GeoLite2-City.mmdb'),
      'GeoLite2-ASN': env.GEOIP_ASN_DB ?? path.join(dataDir, 'geolite2/GeoLite2-ASN.mmdb'),
    },
    listUrls: {
      ...(env.TOR_LIST_URL ? { tor: env.TOR_LIST_URL } : {}),
      ...(env.VPN_LIST_URL ? { vpn: env.VPN_LIST_URL } : {}),
      ...(env.HOSTING_LIST_URL ? { hosting: env.HOSTING_LIST_URL } : {}),
      ...(env.RELAY_LIST_URL ? { relay: env.RELAY_LIST_URL } : {}),
    },
  });
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  if (!env.MAXMIND_LICENSE_KEY)
    process.stdout.write('MAXMIND_LICENSE_KEY is not set: GeoLite2 databases were not downloaded\n');
  process.exit(report.failed.length ? 1 : 0);
}
