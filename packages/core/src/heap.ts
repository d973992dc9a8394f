/**
 * Garbage-collector tuning for processes that stream tensors: Shardline's coordinator and
 * workers. Library code never calls this on its own; the CLIs do, once, at startup.
 *
 * Why: V8 counts the memory behind ArrayBuffers (every Node Buffer) towards the limit that
 * triggers a full mark-compact, and derives that limit from the live heap, which is small in
 * these processes (25 MB for the coordinator). Each training step streams tens of megabytes of
 * short-lived 1 MiB buffers through grpc-js (its framing and deframing copies allocate one per
 * message), so with V8's default factor the coordinator ran about two full collections per step,
 * each 2 to 15 ms, always in the middle of the gradient exchange, the one phase where every
 * worker waits. Those buffers die young: scavenges reclaim them anyway. Letting the heap grow to
 * 4 times its live size between full collections (V8's own upper factor, which it otherwise
 * reserves for heaps it finds cheap to collect) made full collections rare (35 to 4 per run)
 * and halved the exchange time of the seed CNN with 2 workers (apps/coordinator/bench).
 * The cost is memory: the heap may reach 4 times its live size (about 100 MB for the
 * coordinator) before it is collected.
 */
import * as v8 from 'node:v8';
import { ShardlineError } from './errors.js';

/**
 * The heap growth Shardline's processes allow between full collections, in percent over the
 * live size: 300 lets the heap reach 4 times its live size.
 */
export const HEAP_GROWING_PERCENT = 300;

const FLAG = '--heap-growing-percent';

let applied: TuneHeapResult | undefined;

/** Options of {@link tuneHeapForStreaming}. */
export interface TuneHeapOptions {
  /** Percent over the live size; default {@link HEAP_GROWING_PERCENT}. */
  percent?: number;
  /** Node's options for this process, to respect a growth factor set by hand; default `process.execArgv`. */
  execArgv?: readonly string[];
}

/** What {@link tuneHeapForStreaming} did. */
export interface TuneHeapResult {
  /** The growth now in effect, in percent, or undefined when V8 keeps choosing it itself. */
  percent: number | undefined;
  /** "tuned", or "kept" when the process was started with its own --heap-growing-percent. */
  outcome: 'tuned' | 'kept';
}

/**
 * Lets the V8 heap grow to `1 + percent / 100` times its live size between full collections,
 * for a process that streams large, short-lived buffers (see the module comment for the
 * measurements). A factor given on Node's command line (`node --heap-growing-percent=N`) wins:
 * it is kept as it is. Call it once, at the start of a program; never from a library, as it
 * changes the whole process.
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
  const at = execArgv.findIndex((a) => a === FLAG || a.startsWith(`${FLAG}=`));
  if (at >= 0) {
    const given = execArgv[at]!;
    const value = Number(given === FLAG ? execArgv[at + 1] : given.slice(FLAG.length + 1));
    applied = { percent: Number.isFinite(value) ? value : undefined, outcome: 'kept' };
    return applied;
  }
  // V8 reads this flag each time it recomputes its limits after a collection, so setting it now
  // takes effect from the next collection on.
  v8.setFlagsFromString(`${FLAG}=${percent}`);
  applied = { percent, outcome: 'tuned' };
  return applied;
}

/**
 * What the last {@link tuneHeapForStreaming} call in this process did, or undefined when nothing
 * called it (V8 then chooses the growth itself). For logs: the CLIs report it at startup.
 */
export function heapTuning(): TuneHeapResult | undefined {
  return applied;
}
