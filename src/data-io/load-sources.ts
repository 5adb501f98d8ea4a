import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { geoipPaths, openDatabase } from './geoip-files.js';
import { createGeoIp, type GeoDatabase, type GeoIp, type LoadedDatabase } from '../signals/geoip.js';
import { createIpLists, type IpLists, type ListName } from '../signals/ip-lists.js';
import { loadListsFromManifest } from './list-files.js';
import { compileBotPatterns, createUserAgentParser, type BotMatcher, type UserAgentParser } from '../signals/user-agent.js';

/** Tor list staleness when nothing is configured, outside the embedded demo. */
export const DEFAULT_TOR_MAX_AGE_HOURS = 48;

export interface SignalSources {
  readonly geoip: GeoIp;
  readonly lists: IpLists;
  readonly userAgents: UserAgentParser;
  readonly geoipPaths: Partial<Record<GeoDatabase, string>>;
}

async function loadBotPattern(dataDir: string, logger: Logger): Promise<BotMatcher | undefined> {
  try {
    const list = JSON.parse(await readFile(path.join(dataDir, 'user-agents/bots/crawler-user-agents.json'), 'utf8')) as Array<{ pattern: string }>;
    return compileBotPatterns(list.map((e) => e.pattern));
  } catch (error) {
    logger.warn({ err: (error as Error).message }, 'crawler list not loaded; ua.bot uses built-in automation markers only');
    return undefined;
  }
}

/**
 * GeoIP readers, IP lists and the user-agent parser from the config. A file that cannot be read
 * is logged and left out: its signals are unknown (degraded), the service still starts.
 */
export async function loadSignalSources(config: Config, logger: Logger, observeAge?: (dataset: string, seconds: number) => void, clock: () => number = Date.now): Promise<SignalSources> {
  const databases: Partial<Record<GeoDatabase, LoadedDatabase>> = {};
  const paths = geoipPaths(config);
  for (const [db, file] of Object.entries(paths) as Array<[GeoDatabase, string]>) {
    try {
      databases[db] = await openDatabase(file);
      observeAge?.(`geoip_${db}`, Math.max(0, clock() / 1000 - databases[db]!.buildEpoch));
    } catch (error) {
      logger.error({ database: db, err: (error as Error).message }, 'GeoIP database not loaded; its signals are unknown (degraded)');
    }
  }
  const configured = (Object.keys(paths) as GeoDatabase[]).filter((db) => db === 'city' || db === 'asn' || databases[db]);
  const geoip = createGeoIp(databases, configured);

  const { snapshots, failures } = await loadListsFromManifest(config.DATA_DIR).catch((error: Error) => ({ snapshots: [], failures: [error.message] }));
  for (const failure of failures) logger.error({ list: failure }, 'IP list not loaded; its signals are unknown (degraded)');
  const maxAge = (hours: number | undefined) => (hours ? hours * 3600_000 : 0);
  // Tor exits churn by the hour (TorDNSEL drops an exit after 48 h), so outside the embedded demo
  // (whose shipped list is months old) an unset limit means 48 h; an explicit 0 turns it off.
  const demo = config.embedded.includes('memory-store');
  const torDefault = demo ? config.LIST_MAX_AGE_HOURS : config.LIST_MAX_AGE_HOURS || DEFAULT_TOR_MAX_AGE_HOURS;
  const listMaxAge: Partial<Record<ListName, number>> = {
    tor: maxAge(config.TOR_LIST_MAX_AGE_HOURS ?? torDefault),
    vpn: maxAge(config.LIST_MAX_AGE_HOURS),
    relay: maxAge(config.LIST_MAX_AGE_HOURS),
    hosting: maxAge(config.LIST_MAX_AGE_HOURS),
    hosting_asn: maxAge(config.LIST_MAX_AGE_HOURS),
  };
  const lists = createIpLists({ snapshots, maxAgeMs: listMaxAge });
  for (const s of snapshots) observeAge?.(`list_${s.name}`, Math.max(0, (clock() - s.asOf) / 1000));

  const userAgents = createUserAgentParser({ botPattern: await loadBotPattern(config.DATA_DIR, logger) });
  return { geoip, lists, userAgents, geoipPaths: paths };
}
