import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { buildRangeTable } from '../signals/ip-ranges.js';
import { LIST_NAMES, type ListName, type ListSnapshot } from '../signals/ip-lists.js';

const manifestSchema = z.record(
  z.enum(LIST_NAMES),
  z.object({
    files: z.array(z.string()).min(1),
    format: z.enum(['ips', 'cidrs', 'asns']),
    as_of: z.string(),
    source: z.string(),
    licence: z.string().optional(),
  }),
);

export type ListManifest = z.infer<typeof manifestSchema>;

/** `AS123 # comment`, `123,"Name"`, or a bare number; the CSV header and junk are skipped. */
export function parseAsnLines(text: string): Set<number> {
  const asns = new Set<number>();
  for (const line of text.split('\n')) {
    const match = /^\s*(?:AS)?(\d{1,10})\b/i.exec(line);
    if (match) {
      const asn = Number(match[1]);
      if (asn > 0 && asn < 2 ** 32) asns.add(asn);
    }
  }
  return asns;
}

export function snapshotFromText(
  name: ListName,
  format: 'ips' | 'cidrs' | 'asns',
  texts: readonly string[],
  asOf: number,
  source: string,
): ListSnapshot {
  if (format === 'asns') {
    const asns = new Set<number>();
    for (const text of texts) for (const asn of parseAsnLines(text)) asns.add(asn);
    return { name, asns, asOf, entries: asns.size, source };
  }
  const { table, accepted } = buildRangeTable(texts.flatMap((t) => t.split('\n')));
  return { name, table, asOf, entries: accepted, source };
}

/** Loads every list named in `<dataDir>/lists.json`; a list whose files cannot be read is left out (unknown). */
export async function loadListsFromManifest(
  dataDir: string,
): Promise<{ snapshots: ListSnapshot[]; failures: string[] }> {
  const manifest = manifestSchema.parse(JSON.parse(await readFile(path.join(dataDir, 'lists.json'), 'utf8')));
  const snapshots: ListSnapshot[] = [];
  const failures: string[] = [];
  for (const [name, entry] of Object.entries(manifest) as Array<[ListName, NonNullable<ListManifest[ListName]>]>) {
    try {
      const texts = await Promise.all(entry.files.map((f) => readFile(path.join(dataDir, f), 'utf8')));
      snapshots.push(snapshotFromText(name, entry.format, texts, Date.parse(entry.as_of), entry.source));
    } catch (error) {
      failures.push(`${name}: ${(error as Error).message}`);
    }
  }
  return { snapshots, failures };
}

/** The data directory and every directory holding a list file: what a watcher must watch. */
export async function listDirectories(dataDir: string): Promise<string[]> {
  try {
    const manifest = manifestSchema.parse(JSON.parse(await readFile(path.join(dataDir, 'lists.json'), 'utf8')));
    const dirs = new Set<string>([dataDir]);
    for (const entry of Object.values(manifest))
      for (const file of entry?.files ?? []) dirs.add(path.dirname(path.join(dataDir, file)));
    return [...dirs];
  } catch {
    return [dataDir];
  }
}
