import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { hasErrorCode } from '../src/errors.js';
import { HEAP_GROWING_PERCENT, heapTuning, tuneHeapForStreaming } from '../src/heap.js';

const fixture = fileURLToPath(new URL('./fixtures/heapGrowth.mjs', import.meta.url));

/** Full collections a child process runs while its heap triples, with the given growth. */
async function fullCollections(percent: number): Promise<number> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--expose-gc', fixture, String(percent)],
    {
      timeout: 60_000,
    },
  );
  return (JSON.parse(stdout) as { major: number }).major;
}

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

  it('keeps a growth factor given on the command line, and says so', () => {
    expect(tuneHeapForStreaming({ execArgv: ['--heap-growing-percent=150'] })).toEqual({
      percent: 150,
      outcome: 'kept',
    });
    expect(heapTuning()).toEqual({ percent: 150, outcome: 'kept' });
    expect(
      tuneHeapForStreaming({ execArgv: ['--inspect', '--heap-growing-percent', '80'] }),
    ).toEqual({ percent: 80, outcome: 'kept' });
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
