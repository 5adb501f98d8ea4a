/**
 * A static work estimate of a parsed CEL expression, checked at load so that a rule whose cost
 * grows with nesting (eight nested comprehensions over ten elements: 10^8 steps, 50 s of a blocked
 * event loop) is refused before it ever runs. cel-js bounds the AST's size and depth, list and map
 * literals; it has no bound on how many times a node runs, which is what this adds.
 *
 * Units are node evaluations (about 0.1-0.2 µs each on the dev machine). The estimate is an upper
 * bound for everything the engine can feed a rule: signal maps have at most 32 entries (decide and
 * evaluate both cap them) and signal strings at most 8 KiB (the user-agent header cap).
 */
export const COST_LIMITS = {
  /** Comprehensions (all, exists, exists_one, map, filter) inside comprehensions. */
  maxComprehensionNesting: 2,
  /** Node evaluations per rule and run: ~2 ms at worst, so rules stay cheap on the decide path. */
  maxCost: 10_000,
  /** All rules of a ruleset together (each decide runs them all): ~10 ms at worst. */
  maxRulesetCost: 50_000,
  /** Rules per ruleset: compiling one costs up to ~1 ms, and the shipped set has fifteen. */
  maxRules: 300,
  /** Compilation stops after this many errors: a body of a thousand bad rules costs twenty. */
  maxErrors: 20,
} as const;

/** What an iteration over a non-literal value can cost: a signal map (≤ 32 entries) or a list the rule built. */
const DYNAMIC_ITERABLE = 256;
/** `split()` of a non-literal string: a signal string is at most 8 KiB. */
const DYNAMIC_STRING = 8192;

const COMPREHENSIONS = new Set(['all', 'exists', 'exists_one', 'map', 'filter']);
/** Macros that let an expression reuse a value (and so double a list per level): never needed by a rule. */
const REFUSED_CALLS = new Set(['bind']);

/** The shape of a cel-js parse node that this walker relies on: `op` and `args`. */
interface Node {
  readonly op: string;
  readonly args: unknown;
}

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && typeof (value as Node).op === 'string' && 'args' in value;
}

function children(node: Node): Node[] {
  const out: Node[] = [];
  const visit = (value: unknown): void => {
    if (isNode(value)) out.push(value);
    else if (Array.isArray(value)) for (const item of value) visit(item);
  };
  visit(node.args);
  return out;
}

/** `rcall`: [name, receiver, args]; `call`: [name, args]. */
function callParts(node: Node): { name: string; receiver: Node | undefined; args: Node[] } | undefined {
  if (node.op !== 'rcall' && node.op !== 'call') return undefined;
  const parts = node.args as unknown[];
  const name = parts[0];
  if (typeof name !== 'string') return undefined;
  const receiver = node.op === 'rcall' && isNode(parts[1]) ? parts[1] : undefined;
  const rawArgs = node.op === 'rcall' ? parts[2] : parts[1];
  return { name, receiver, args: Array.isArray(rawArgs) ? rawArgs.filter(isNode) : [] };
}

/** An upper bound on the number of elements (or characters) a node can yield. */
function sizeBound(node: Node): number {
  if (node.op === 'list' || node.op === 'map') return Array.isArray(node.args) ? node.args.length : DYNAMIC_ITERABLE;
  if (node.op === 'value') return typeof node.args === 'string' ? node.args.length : 1;
  if (node.op === '+') {
    const [left, right] = children(node);
    return (left ? sizeBound(left) : 0) + (right ? sizeBound(right) : 0);
  }
  const call = callParts(node);
  if (call?.receiver && (call.name === 'map' || call.name === 'filter')) return sizeBound(call.receiver);
  if (call?.receiver && call.name === 'split')
    return call.receiver.op === 'value' ? sizeBound(call.receiver) + 1 : DYNAMIC_STRING;
  if (node.op === 'id' || node.op === '.' || node.op === '[]') return DYNAMIC_ITERABLE;
  return DYNAMIC_ITERABLE;
}

export interface CostReport {
  readonly cost: number;
  readonly nesting: number;
  /** Set when a construct is refused whatever its cost. */
  readonly refused?: string;
}

function walk(node: Node, depth: number): CostReport {
  const call = callParts(node);
  if (call && REFUSED_CALLS.has(call.name))
    return { cost: 1, nesting: depth, refused: `${call.name}() is not allowed in rules` };
  if (call?.receiver && COMPREHENSIONS.has(call.name)) {
    const iterable = walk(call.receiver, depth);
    // The first argument is the iteration variable; the others run once per element.
    let body: CostReport = { cost: 1, nesting: depth + 1 };
    for (const arg of call.args.slice(1)) body = merge(body, walk(arg, depth + 1));
    const perElement = body.cost;
    const report: CostReport = {
      cost: iterable.cost + sizeBound(call.receiver) * perElement,
      nesting: Math.max(iterable.nesting, body.nesting),
    };
    const refused = iterable.refused ?? body.refused;
    return refused ? { ...report, refused } : report;
  }
  let total: CostReport = { cost: 1, nesting: depth };
  for (const child of children(node)) total = merge(total, walk(child, depth));
  return total;
}

function merge(a: CostReport, b: CostReport): CostReport {
  const out: CostReport = { cost: a.cost + b.cost, nesting: Math.max(a.nesting, b.nesting) };
  const refused = a.refused ?? b.refused;
  return refused ? { ...out, refused } : out;
}

/** Walks a cel-js parse tree (`env.parse(text).ast`). */
export function estimateCost(ast: unknown): CostReport {
  if (!isNode(ast)) return { cost: 0, nesting: 0 };
  return walk(ast, 0);
}

/** Why a rule is too expensive to accept, or undefined when it is within the budget. */
export function costProblem(ast: unknown): string | undefined {
  const report = estimateCost(ast);
  if (report.refused) return report.refused;
  if (report.nesting > COST_LIMITS.maxComprehensionNesting) {
    return `comprehensions nested ${report.nesting} deep (at most ${COST_LIMITS.maxComprehensionNesting})`;
  }
  if (report.cost > COST_LIMITS.maxCost)
    return `estimated cost ${report.cost} exceeds the budget of ${COST_LIMITS.maxCost} steps`;
  return undefined;
}

/**
 * The regular expressions a parsed expression runs, found in the tree (any spelling: `x.matches(p)`,
 * `matches(x, p)`, spaces, newlines, raw or triple-quoted strings). Each must be one string literal,
 * so it can be checked at load; anything computed is refused.
 */
export function regexPatterns(ast: unknown): { patterns: string[]; problem?: string } {
  const patterns: string[] = [];
  const visit = (node: Node): string | undefined => {
    const call = callParts(node);
    if (call?.name === 'matches') {
      const pattern = call.receiver ? call.args[0] : call.args[1];
      if (pattern?.op !== 'value' || typeof pattern.args !== 'string')
        return 'matches() takes only a string literal pattern, so it can be checked at load';
      patterns.push(pattern.args);
    }
    for (const child of children(node)) {
      const problem = visit(child);
      if (problem) return problem;
    }
    return undefined;
  };
  const problem = isNode(ast) ? visit(ast) : undefined;
  return problem ? { patterns, problem } : { patterns };
}
