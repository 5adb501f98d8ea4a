import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { openDatabase } from './geoip-files.js';
import { createGeoIp, type GeoDatabase, type GeoIp, type LoadedDatabase } from '../signals/geoip.js';
import { createIpLists, type IpLists } from '../signals/ip-lists.js';
import { loadListsFromManifest } from './list-files.js';
import {
  compileBotPatterns,
  createUserAgentParser,
  type BotMatcher,
  type UserAgentParser,
} from '../signals/user-agent.js';

export interface SignalSources {
  readonly geoip: GeoIp;
  readonly lists: IpLists;
  readonly userAgents: UserAgentParser;
  readonly geoipPaths: Partial<Record<GeoDatabase, string>>;
}

async function loadBotPattern(dataDir: string, logger: Logger): Promise<BotMatcher | undefined> {
  try {
    const list = JSON.parse(
      await readFile(path.join(dataDir, 'user-agents/bots/crawler-user-agents.json'), 'utf8'),
    ) as Array<{ pattern: string }>;
    return compileBotPatterns(list.map((e) => e.pattern));
  } catch (error) {
    logger.warn(
      { err: (error as Error).message },
      'crawler list not loaded; ua.bot uses built-in automation markers only',
    );
    return undefined;
  }
}

/**
 * GeoIP readers, IP lists and the user-agent parser from the data settings. A file that cannot be read
 * is logged and left out: its signals are unknown (degraded), the service still starts.
 */
export async function loadSignalSources(
  data: Config['data'],
  logger: Logger,
  observeAge?: (dataset: string, seconds: number) => void,
  clock: () => number = Date.now,
): Promise<SignalSources> {
  const databases: Partial<Record<GeoDatabase, LoadedDatabase>> = {};
  const paths = data.geoip;
  for (const [db, file] of Object.entries(paths) as Array<[GeoDatabase, string]>) {
    try {
      const loaded = await openDatabase(file);
      databases[db] = loaded;
      observeAge?.(`geoip_${db}`, Math.max(0, clock() / 1000 - loaded.buildEpoch));
    } catch (error) {
      logger.error(
        { database: db, err: (error as Error).message },
        'GeoIP database not loaded; its signals are unknown (degraded)',
      );
    }
  }
  const configured = (Object.keys(paths) as GeoDatabase[]).filter(
    (db) => db === 'city' || db === 'asn' || databases[db],
  );
  const geoip = createGeoIp(databases, configured);

  const { snapshots, failures } = await loadListsFromManifest(data.dir).catch((error: Error) => ({
    snapshots: [],
    failures: [error.message],
  }));
  for (const failure of failures)
    logger.error({ list: failure }, 'IP list not loaded; its signals are unknown (degraded)');
  const lists = createIpLists({ snapshots, maxAgeMs: data.lists.maxAgeMs });
  for (const s of snapshots) observeAge?.(`list_${s.name}`, Math.max(0, (clock() - s.asOf) / 1000));

  const userAgents = createUserAgentParser({ botPattern: await loadBotPattern(data.dir, logger) });
  return { geoip, lists, userAgents, geoipPaths: paths };
}
