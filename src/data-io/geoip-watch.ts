import { stat } from 'node:fs/promises';
import path from 'node:path';
import { watchDirectory } from '../lib/watch-directory.js';
import type { GeoDatabase, GeoIp, LoadedDatabase } from '../signals/geoip.js';

export interface GeoSwapEvents {
  swapped(db: GeoDatabase, loaded: LoadedDatabase): void;
  rejected(db: GeoDatabase, reason: string): void;
}

/**
 * Hot swap as geoipupdate does it (write a temp file, rename over): the new file is opened and
 * proven before the swap; a truncated, empty or corrupt file keeps the previous reader serving
 * (node-maxmind #62 crashed on in-place overwrites).
 */
export function watchGeoDatabases(
  geoip: GeoIp,
  paths: Partial<Record<GeoDatabase, string>>,
  open: (file: string) => Promise<LoadedDatabase>,
  events: GeoSwapEvents,
): () => void {
  const lastSeen = new Map<string, string>();
  const check = async (db: GeoDatabase, file: string) => {
    try {
      const info = await stat(file);
      const signature = `${info.ino}:${info.size}:${info.mtimeMs}`;
      if (lastSeen.get(file) === signature) return;
      lastSeen.set(file, signature);
      const loaded = await open(file);
      geoip.replace(db, loaded);
      events.swapped(db, loaded);
    } catch (error) {
      events.rejected(db, (error as Error).message);
    }
  };
  const byDir = new Map<string, Array<[GeoDatabase, string]>>();
  for (const [db, file] of Object.entries(paths) as Array<[GeoDatabase, string]>) {
    const dir = path.dirname(file);
    byDir.set(dir, [...(byDir.get(dir) ?? []), [db, file]]);
    void stat(file).then(
      (info) => lastSeen.set(file, `${info.ino}:${info.size}:${info.mtimeMs}`),
      () => undefined,
    );
  }
  const stops = [...byDir.entries()].map(([dir, dbs]) =>
    watchDirectory(dir, () => dbs.forEach(([db, file]) => void check(db, file)), 250),
  );
  return () => {
    for (const stop of stops) stop();
  };
}
