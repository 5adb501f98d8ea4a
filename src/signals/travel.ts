import type { Place } from '../store/store.js';

const EARTH_RADIUS_KM = 6371.0088;

export function haversineKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(a)));
}

export interface TravelInput {
  readonly last: (Place & { readonly at: number }) | undefined;
  readonly here: Place | undefined;
  readonly now: number;
  /** Anonymizer, relay, mobile or satellite network, or a private address: geography means nothing. */
  readonly unreliable: boolean;
}

export interface Travel {
  readonly distanceKm: number;
  readonly elapsedHours: number;
  readonly speedKmh: number;
}

/** Never "impossible" on weak evidence: undefined (not assessed) unless both ends are real places. */
export function assessTravel({ last, here, now, unreliable }: TravelInput): Travel | undefined {
  if (!last || !here || unreliable) return undefined;
  if (last.travelNet === here.travelNet) return undefined;
  const raw = haversineKm(last.lat, last.lon, here.lat, here.lon);
  const distanceKm = Math.max(0, raw - last.accuracyKm - here.accuracyKm);
  // A floor of one minute keeps back-to-back sign-ins from dividing by zero into infinity.
  const elapsedHours = Math.max(now - last.at, 60_000) / 3600_000;
  return { distanceKm, elapsedHours, speedKmh: distanceKm / elapsedHours };
}

export function coarse(value: number): number {
  return Math.round(value * 10) / 10;
}
