/**
 * Garbage-collector tuning for processes that stream tensors: Shardline's coordinator and
 * workers. Library code never calls this on its own; the CLIs do, once, at startup.
 *
 * Why: each training step streams tens of megabytes of short-lived 1 MiB buffers through grpc-js
 * (its framing and deframing copies allocate one per message) through processes whose live heap
 * is small (25 MB for the coordinator). Those buffers die young: scavenges reclaim them anyway.
 * But V8 also started full mark-compacts because of them, about two per step in the coordinator,
 * each 2 to 15 ms, always in the middle of the gradient exchange, the one phase where every
 * worker waits. Two V8 flags, set at runtime, stop that:
 *
 * - `--heap-growing-percent=300`. V8 counts the memory behind ArrayBuffers (every Node Buffer)
 *   towards the limit that starts a full collection, and derives that limit from the live heap:
 *   `max(live * factor, live + 8 MB) + young-generation capacity` (V8's heap-controller.cc).
 *   A factor of 4 (V8's own upper factor, which it otherwise reserves for heaps it finds cheap to
 *   collect) made full collections rare and halved the exchange time of the seed CNN with 2
 *   workers (apps/coordinator/bench).
 * - `--external-memory-accounted-in-global-limit`, where V8 has it (V8 13 and 14: Node 24 to 26,
 *   off by default; V8 11.3 and 12.4 in Node 20 and 22 have no such flag). On Node 24 the factor
 *   alone left 14 to 18 full collections per run where Node 20 and 22 had 6: nearly all of them
 *   started by V8's separate external-memory limit ("external memory pressure" in
 *   `--trace-incremental-marking`), which no growth factor governs. This flag makes V8 count
 *   ArrayBuffer memory inside its global limit instead, the one the factor sizes.
 *
 * Full collections in the coordinator (`train --local-workers 2`, seed CNN, 2 epochs of 8 steps,
 * wasm backend, this 2-core machine; counted with `--trace-gc`):
 *
 *                        V8 defaults   factor only   both flags
 *     Node 20 (V8 11.3)       55             6            -
 *     Node 22 (V8 12.4)       47             6            -
 *     Node 24 (V8 13.6)       67          14, 18          1     (the external flag alone: 50)
 *
 * Both flags work when set after startup: V8 reads them each time it recomputes or checks its
 * limits, and Node starts V8 with `--no-freeze-flags-after-init`; on Node 20, 22 and 24 the
 * counts match (within one) those of the same flags given on Node's command line.
 *
 * Node 24's young generation is also 4 times larger: semi-spaces of up to 64 MB instead of 16 MB
 * (`--scavenger-max-new-space-capacity-mb` went from 8 in Node 22 to 32, doubled without pointer
 * compression), and V8 adds that capacity to every old-generation limit. A factor therefore
 * shows less on a small heap: growing a 44 MB heap with a factor of 1.1, the next limit is 68 MB
 * on Node 20 and 86 MB, then 165 MB, on Node 24 (`--trace-gc-verbose`). The tuning is in effect
 * all the same; packages/core/test/heap.test.ts pins the young generation to see it.
 *
 * The cost is memory: the heap may reach 4 times its live size plus the young generation (about
 * 115 MB for the coordinator on Node 20 and 22, up to about 165 MB on Node 24) before it is
 * collected. The coordinator's peak RSS on Node 24 was about the same with and without the
 * external flag (502 and 515 MB, most of it TensorFlow.js).
 */
import * as v8 from 'node:v8';
import { ShardlineError } from './errors.js';

/**
 * The heap growth Shardline's processes allow between full collections, in percent over the
 * live size: 300 lets the heap reach 4 times its live size.
 */
export const HEAP_GROWING_PERCENT = 300;

const GROWTH_FLAG = '--heap-growing-percent';
const EXTERNAL_FLAG = '--external-memory-accounted-in-global-limit';

let applied: TuneHeapResult | undefined;

/** Options of {@link tuneHeapForStreaming}. */
export interface TuneHeapOptions {
  /** Percent over the live size; default {@link HEAP_GROWING_PERCENT}. */
  percent?: number;
  /** Node's options for this process, to keep V8 flags set by hand; default `process.execArgv`. */
  execArgv?: readonly string[];
}

/** What {@link tuneHeapForStreaming} did. */
export interface TuneHeapResult {
  /** The growth now in effect, in percent, or undefined when V8 keeps choosing it itself. */
  percent: number | undefined;
  /** "tuned", or "kept" when the process was started with its own --heap-growing-percent. */
  outcome: 'tuned' | 'kept';
  /**
   * Whether ArrayBuffer memory counts inside V8's global limit
   * (`--external-memory-accounted-in-global-limit`): "tuned" when this call switched it on,
   * "kept" when Node's command line set it either way, "unavailable" where this V8 has no such
   * flag (before V8 13: Node 20 and 22).
   */
  externalMemory: 'tuned' | 'kept' | 'unavailable';
}

/**
 * Lets the V8 heap grow to `1 + percent / 100` times its live size between full collections,
 * and, where V8 supports it (V8 13 and 14: Node 24 to 26), counts ArrayBuffer memory against
 * that same limit, for a process that streams large, short-lived buffers (see the module comment
 * for the measurements). A flag given on Node's command line (`node --heap-growing-percent=N`,
 * `node --no-external-memory-accounted-in-global-limit`) wins: it is kept as it is. Call it once,
 * at the start of a program; never from a library, as it changes the whole process.
 *
 * @example
 * ```ts
 * tuneHeapForStreaming(); // first line of a CLI that trains or serves tensors
 * ```
 */
export function tuneHeapForStreaming(options: TuneHeapOptions = {}): TuneHeapResult {
  const percent = options.percent ?? HEAP_GROWING_PERCENT;
  if (!Number.isInteger(percent) || percent < 1 || percent > 1000) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Heap growing percent out of range: expected a whole number from 1 to 1000, found ${percent}. ` +
        `Leave it out for the default, ${HEAP_GROWING_PERCENT}.`,
    );
  }
  const execArgv = options.execArgv ?? process.execArgv;

  let growth: Pick<TuneHeapResult, 'percent' | 'outcome'>;
  const at = findFlag(execArgv, GROWTH_FLAG);
  if (at >= 0) {
    const given = execArgv[at]!;
    const eq = given.indexOf('=');
    const value = Number(eq < 0 ? execArgv[at + 1] : given.slice(eq + 1));
    growth = { percent: Number.isFinite(value) ? value : undefined, outcome: 'kept' };
  } else {
    // V8 reads this flag each time it recomputes its limits after a collection, so setting it now
    // takes effect from the next collection on.
    v8.setFlagsFromString(`${GROWTH_FLAG}=${percent}`);
    growth = { percent, outcome: 'tuned' };
  }

  let externalMemory: TuneHeapResult['externalMemory'];
  if (!hasExternalMemoryFlag(process.versions.v8)) {
    externalMemory = 'unavailable';
  } else if (findFlag(execArgv, EXTERNAL_FLAG) >= 0) {
    externalMemory = 'kept';
  } else {
    // Checked on each external-memory report and limit computation; early in a program there is
    // little external memory yet, so the switch leaves no stale limit behind.
    v8.setFlagsFromString(EXTERNAL_FLAG);
    externalMemory = 'tuned';
  }

  applied = { ...growth, externalMemory };
  return applied;
}

/**
 * What the last {@link tuneHeapForStreaming} call in this process did, or undefined when nothing
 * called it (V8 then chooses the growth itself). For logs: the CLIs report it at startup.
 */
export function heapTuning(): TuneHeapResult | undefined {
  return applied;
}

/**
 * Whether this V8 has `--external-memory-accounted-in-global-limit`, off by default: checked with
 * `node --v8-options` on V8 13.6 (Node 24) and 14.6 (Node 26). Setting a flag V8 lacks prints
 * "Error: unrecognized flag" on stderr, so other versions are left alone; check the flag again
 * when a Node release moves to V8 15.
 */
function hasExternalMemoryFlag(version: string): boolean {
  const major = Number.parseInt(version, 10);
  return major === 13 || major === 14;
}

/**
 * Where `flag` (a V8 flag such as `--heap-growing-percent`) is in `execArgv`, in any spelling V8
 * accepts (`_` for `-`, `--no-` before a boolean, `=value` or the value in the next argument),
 * or -1.
 */
function findFlag(execArgv: readonly string[], flag: string): number {
  const negated = `--no-${flag.slice(2)}`;
  return execArgv.findIndex((arg) => {
    if (!arg.startsWith('--')) return false;
    const eq = arg.indexOf('=');
    const name = `--${(eq < 0 ? arg.slice(2) : arg.slice(2, eq)).replaceAll('_', '-')}`;
    return name === flag || name === negated;
  });
}
