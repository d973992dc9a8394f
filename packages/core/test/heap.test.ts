import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { hasErrorCode } from '../src/errors.js';
import { HEAP_GROWING_PERCENT, heapTuning, tuneHeapForStreaming } from '../src/heap.js';

const fixture = fileURLToPath(new URL('./fixtures/heapGrowth.mjs', import.meta.url));
const builtHeap = new URL('../dist/heap.js', import.meta.url).href;

/** V8 13 (Node 24) has --external-memory-accounted-in-global-limit, off by default. */
const v8Major = Number.parseInt(process.versions.v8, 10);
const externalFlagAvailable = v8Major === 13 || v8Major === 14;

/** Runs `args` in a child Node process and parses the JSON line it prints. */
async function runChild(args: string[]): Promise<{ major: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 60_000 });
  return JSON.parse(stdout) as { major: number };
}

/**
 * Full collections a child process runs while its heap triples, with the given growth.
 *
 * The child's young generation is pinned to 16 MB semi-spaces, Node 20's and 22's default: V8
 * adds the young generation's capacity to every old-generation limit, and Node 24's default of
 * up to 64 MB alone is most of this 40 to 120 MB heap, so a growth of 10% and one of 300% both
 * end in about one full collection there. Pinned, the factor decides, on every Node version.
 */
async function fullCollections(percent: number): Promise<number> {
  const run = await runChild(['--expose-gc', '--max-semi-space-size=16', fixture, String(percent)]);
  return run.major;
}

/**
 * A small live heap (25 MB, the coordinator's) with 1,000 short-lived 1 MiB Buffers streaming
 * through it, 32 alive at a time, as grpc-js frames and deframes messages; prints its full
 * collections.
 */
const bufferStream = `
import { constants, PerformanceObserver } from 'node:perf_hooks';
const { tuneHeapForStreaming } = await import(process.argv[1]);
tuneHeapForStreaming();
let major = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
}).observe({ entryTypes: ['gc'] });
const live = Array.from({ length: 25 }, (_, i) => new Array(131_072).fill(i));
const recent = [];
for (let i = 0; i < 1000; i++) {
  const buffer = Buffer.allocUnsafe(1 << 20);
  buffer.fill(i & 255);
  recent.push(buffer);
  if (recent.length > 32) recent.shift();
  if (i % 16 === 15) await new Promise((resolve) => setImmediate(resolve));
}
await new Promise((resolve) => setTimeout(resolve, 20));
console.log(JSON.stringify({ major, live: live.length, recent: recent.length }));
`;

describe('tuneHeapForStreaming', () => {
  it('changes how far the heap grows between full collections, in the running process', async () => {
    // 10%: a full collection each time the heap grows by a tenth; 300%: none until it quadruples.
    const [tight, tuned] = await Promise.all([
      fullCollections(10),
      fullCollections(HEAP_GROWING_PERCENT),
    ]);
    expect(tight).toBeGreaterThanOrEqual(2);
    expect(tuned).toBeLessThan(tight);
    expect(tuned).toBeLessThanOrEqual(1);
  });

  // V8 14 (Node 26) starts fewer of these collections by itself (1 to 6 here), too few for this
  // workload to tell the flag's effect; V8 13 (Node 24) starts 10 to 12 without it.
  it.runIf(v8Major === 13)(
    'on Node 24, keeps short-lived Buffers from starting full collections through the external-memory limit',
    async () => {
      const script = ['--input-type=module', '--eval', bufferStream, builtHeap];
      // The same tuning, with the external flag turned off by hand (which it keeps).
      const [growthOnly, both] = await Promise.all([
        runChild(['--no-external-memory-accounted-in-global-limit', ...script]),
        runChild(script),
      ]);
      expect(growthOnly.major).toBeGreaterThanOrEqual(5);
      expect(both.major).toBeLessThanOrEqual(2);
    },
  );

  it('keeps V8 flags given on the command line, and says so', () => {
    // Passing the external flag keeps this test process as it is on Node 24 too.
    const external = '--no-external-memory-accounted-in-global-limit';
    const externalMemory = externalFlagAvailable ? 'kept' : 'unavailable';
    expect(tuneHeapForStreaming({ execArgv: ['--heap-growing-percent=150', external] })).toEqual({
      percent: 150,
      outcome: 'kept',
      externalMemory,
    });
    expect(heapTuning()).toEqual({ percent: 150, outcome: 'kept', externalMemory });
    expect(
      tuneHeapForStreaming({ execArgv: ['--inspect', '--heap-growing-percent', '80', external] }),
    ).toEqual({ percent: 80, outcome: 'kept', externalMemory });
    // V8 reads `_` as `-` in flag names.
    expect(
      tuneHeapForStreaming({
        execArgv: ['--heap_growing_percent=120', '--external_memory_accounted_in_global_limit'],
      }),
    ).toEqual({ percent: 120, outcome: 'kept', externalMemory });
  });

  it('refuses a growth it cannot mean, saying what it expected', () => {
    for (const percent of [0, -5, 1.5, 5000, Number.NaN]) {
      let caught: unknown;
      try {
        tuneHeapForStreaming({ percent, execArgv: [] });
      } catch (error) {
        caught = error;
      }
      expect(hasErrorCode(caught, 'INVALID_ARGUMENT')).toBe(true);
      expect(String((caught as Error).message)).toMatch(
        /expected a whole number from 1 to 1000, found .*Leave it out for the default, 300/,
      );
    }
  });
});
