import calculateSlot from 'cluster-key-slot';

/** Redis Cluster's hash slots. */
const SLOTS = 16384;
/** Cells on a cluster by default: 12 spread evenly over 2, 3, 4 or 6 masters, and keep the Workers (one per cell and agent) few. */
export const DEFAULT_CLUSTER_CELLS = 12;
/** More cells than this would cost more Workers and connections than any cluster's masters can use. */
export const MAX_CELLS = 256;

export class CellLayoutError extends Error {
  override readonly name = 'CellLayoutError';
}

/**
 * `$PALISADE_CELLS`, where set: how every process of a deployment (workers, the edge, the CLI) is given
 * one number of cells without a flag of its own, as `$REDIS_URL` gives them one Redis.
 */
export function cellsFromEnv(): number | undefined {
  const raw = process.env.PALISADE_CELLS;
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_CELLS) throw new CellLayoutError(`PALISADE_CELLS must be a whole number from 1 to ${MAX_CELLS}, not ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Where a run's keys live: in one of `count` cells chosen by its id. A Redis Cluster runs a multi-key
 * script, a BullMQ flow (a parent and its children) or a Lua-checked claim only when every key is in one
 * hash slot, so a run is kept whole in one cell, and each cell is a hash tag (`prefix:{tag}`) with its own
 * queues, run keys and audit chain. Runs spread over cells, cells over the cluster's masters.
 *
 * Each cell's tag is picked so that its slot falls in the cell's own 1/count of the slot range: masters
 * hold contiguous slot ranges, so cells spread over them evenly rather than as CRC16 happens to fall
 * (12 cells: 4 on each of 3 masters, 3 on each of 4, 2 on each of 6).
 * With one cell and no tag asked for, keys are `prefix:…` exactly as on a single Redis.
 */
export class Cells {
  readonly count: number;
  private readonly prefixes: readonly string[];

  constructor(
    readonly base: string,
    count = 1,
    tagged = count > 1,
  ) {
    if (!Number.isInteger(count) || count < 1 || count > MAX_CELLS) throw new CellLayoutError(`cells must be a whole number from 1 to ${MAX_CELLS}, not ${count}`);
    // The first {…} in a key decides its slot: a brace in the prefix would put every cell in one slot.
    if (tagged && /[{}]/.test(base)) throw new CellLayoutError(`the key prefix ${JSON.stringify(base)} holds a brace; with cells (Redis Cluster) the runtime adds the hash tags itself`);
    this.count = count;
    this.prefixes = tagged ? Array.from({ length: count }, (_, k) => `${base}:{${tagFor(k, count)}}`) : [base];
  }

  /** The cell of a run. */
  of(runId: string): number {
    return this.count === 1 ? 0 : calculateSlot(runId) % this.count;
  }

  /** The key prefix of a run's cell. */
  prefixOf(runId: string): string {
    return this.prefixes[this.of(runId)]!;
  }

  /** Every cell's key prefix, in cell order. */
  get all(): readonly string[] {
    return this.prefixes;
  }
}

/**
 * The first tag `c<k>.<n>` whose slot lies in the middle half of cell k's share of the slot range: a
 * master's range that ends near a cell's boundary (16384 does not divide by 3) then still holds the cell.
 */
function tagFor(k: number, count: number): string {
  const start = (k * SLOTS) / count;
  const width = SLOTS / count;
  const from = Math.ceil(start + width / 4);
  const to = Math.max(from + 1, Math.floor(start + (3 * width) / 4));
  for (let n = 0; ; n++) {
    const tag = `c${k}.${n}`;
    const slot = calculateSlot(tag);
    if (slot >= from && slot < to) return tag;
  }
}
