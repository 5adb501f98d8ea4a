/** The step-up ladder. Order matters: a higher index is more friction, and the highest rung wins. */
export const RUNGS = ['SKIP', 'PASSIVE', 'FLASHING', 'ACTIVE_3D', 'DENY'] as const;
export type Rung = (typeof RUNGS)[number];

/** The rungs that open a Didit liveness session. */
export const STEP_UP_RUNGS = ['PASSIVE', 'FLASHING', 'ACTIVE_3D'] as const;
export type StepUpRung = (typeof STEP_UP_RUNGS)[number];

const RANK: Readonly<Record<Rung, number>> = { SKIP: 0, PASSIVE: 1, FLASHING: 2, ACTIVE_3D: 3, DENY: 4 };

export function rank(rung: Rung): number {
  return RANK[rung];
}

export function higher(a: Rung, b: Rung): Rung {
  return RANK[a] >= RANK[b] ? a : b;
}

export function isStepUp(rung: Rung): rung is StepUpRung {
  return rung === 'PASSIVE' || rung === 'FLASHING' || rung === 'ACTIVE_3D';
}

/** One rung up the ladder (DENY stays DENY). */
export function nextRung(rung: Rung): Rung {
  return RUNGS[Math.min(RANK[rung] + 1, RUNGS.length - 1)] as Rung;
}

export interface ScoreBand {
  readonly min_score: number;
  readonly action: Rung;
}

/** Maps a total score to a rung: the band with the greatest `min_score` not above the score. */
export function rungForScore(bands: readonly ScoreBand[], score: number): Rung {
  let result: Rung = 'SKIP';
  let best = -Infinity;
  for (const band of bands) {
    if (score >= band.min_score && band.min_score >= best) {
      best = band.min_score;
      result = band.action;
    }
  }
  return result;
}
