/**
 * The ring all-reduce over in-memory links: the averaged result (against averageGradients and
 * an exact float64 reference), bit-identical replicas, zero-sample members, the bytes each
 * member moves, and the fault paths (a tampering peer, a failing member, an abort), each of
 * which must settle every member's promise.
 */
import { hasErrorCode, isShardlineError, type ShardlineErrorCode } from '@shardline/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { averageGradients } from '../src/averageGradients.js';
import type { ShareResult } from '../src/contract.js';
import { createMemoryRing } from '../src/ring/memoryRing.js';
import { roundToDtype } from '../src/ring/payload.js';
import { ringSegments } from '../src/ring/plan.js';
import { type RingResult, ringAllReduce } from '../src/ring/ringAllReduce.js';
import type { RingDtype, RingLink, RingMessage } from '../src/ring/types.js';

/** float32 unit roundoff: the relative error of one rounding to float32. */
const U = 2 ** -24;

// Vitest reports unhandled rejections too, but after the test that caused them; this makes the
// test that leaked one fail by name.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  await new Promise((resolve) => setTimeout(resolve, 5));
  expect(unhandled).toEqual([]);
});

/** Deterministic values in [-1, 1) scaled by a per-member magnitude (mulberry32). */
function gradients(worldSize: number, length: number, seed: number): Float32Array[] {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: worldSize }, (_, r) => {
    const scale = 10 ** (r % 3) / 100;
    return Float32Array.from({ length }, () => (next() * 2 - 1) * scale);
  });
}

interface RunOptions {
  counts?: number[];
  maxChunkBytes?: number;
  capacity?: number;
  step?: number;
  /** Replaces a member's link, to tamper with or count what it sends. */
  wrap?: (rank: number, link: RingLink) => RingLink;
  signal?: (rank: number) => AbortSignal | undefined;
  /** Ranks that never call ringAllReduce (a member that is gone). */
  absent?: number[];
  dtype?: RingDtype;
}

/** Runs one all-reduce over a memory ring; an absent member's entry reads "rejected: absent". */
async function runRing(
  grads: Float32Array[],
  options: RunOptions = {},
): Promise<PromiseSettledResult<RingResult>[]> {
  const worldSize = grads.length;
  const links = createMemoryRing(worldSize, { capacity: options.capacity ?? 2 });
  return Promise.all(
    grads.map(async (gradient, rank): Promise<PromiseSettledResult<RingResult>> => {
      if (options.absent?.includes(rank)) return { status: 'rejected', reason: 'absent' };
      const signal = options.signal?.(rank);
      const [settled] = await Promise.allSettled([
        ringAllReduce({
          rank,
          worldSize,
          gradient,
          sampleCount: options.counts?.[rank] ?? 8,
          link: options.wrap ? options.wrap(rank, links[rank]!) : links[rank]!,
          maxChunkBytes: options.maxChunkBytes ?? 64,
          step: options.step ?? 7,
          ...(signal ? { signal } : {}),
          ...(options.dtype ? { dtype: options.dtype } : {}),
        }),
      ]);
      return settled;
    }),
  );
}

function fulfilled(settled: PromiseSettledResult<RingResult>[]): RingResult[] {
  return settled.map((s, rank) => {
    if (s.status === 'rejected') throw new Error(`rank ${rank} rejected: ${String(s.reason)}`);
    return s.value;
  });
}

const bytesOf = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

/** memcmp of every member's result with rank 0's, naming the first value that differs. */
function expectIdentical(results: RingResult[]): void {
  const reference = bytesOf(results[0]!.gradient);
  results.forEach((r, rank) => {
    const bytes = bytesOf(r.gradient);
    if (bytes.equals(reference)) return;
    let i = 0;
    while (i < bytes.length && bytes[i] === reference[i]) i++;
    const at = i >> 2;
    expect.fail(
      `rank ${rank}'s result differs from rank 0's at value ${at}: ` +
        `${r.gradient[at]} vs ${results[0]!.gradient[at]} (lengths ${bytes.length}, ${reference.length})`,
    );
  });
  for (const r of results) expect(r.checksum).toBe(results[0]!.checksum);
}

/**
 * The tolerance of ring vs averageGradients, per element: each computes its sum with one float32
 * rounding per member (the ring then one more for the division), each rounding off by at most
 * U x the magnitude sum(w_i |g_i|), so the two differ by at most (2N + 1) U x that; the bound
 * used is (2N + 2) U, which an unweighted mean or a missed member would exceed by orders of
 * magnitude.
 */
function expectCloseToAverage(result: Float32Array, grads: Float32Array[], counts: number[]): void {
  const n = grads.length;
  const shares: ShareResult[] = grads.map((gradient, r) => ({
    gradient,
    sampleCount: counts[r]!,
    loss: 0,
    correct: 0,
    computeSeconds: 0,
  }));
  const { gradient: star } = averageGradients(shares, result.length);
  const total = counts.reduce((a, b) => a + b, 0);
  let worst = 0;
  for (let i = 0; i < result.length; i++) {
    let magnitude = 0;
    let exact = 0;
    for (let r = 0; r < n; r++) {
      if (counts[r] === 0) continue;
      magnitude += (counts[r]! / total) * Math.abs(grads[r]![i]!);
      exact += (counts[r]! * grads[r]![i]!) / total;
    }
    const bound = (2 * n + 2) * U * magnitude;
    expect(Math.abs(result[i]! - star[i]!)).toBeLessThanOrEqual(bound);
    // Against the exact (float64) average the ring alone rounds N + 1 times.
    expect(Math.abs(result[i]! - exact)).toBeLessThanOrEqual((n + 2) * U * magnitude);
    if (magnitude > 0) worst = Math.max(worst, Math.abs(result[i]! - star[i]!) / magnitude);
  }
  expect(worst).toBeLessThanOrEqual((2 * n + 2) * U);
}

describe('ringAllReduce: every member ends with the same bytes, the weighted average', () => {
  for (let worldSize = 1; worldSize <= 6; worldSize++) {
    it(`N = ${worldSize}: bit-identical replicas for lengths 0 to 1,001 and chunks of 4 B to 1 MiB`, async () => {
      const lengths = [0, 1, worldSize - 1, worldSize + 1, 37, 1001];
      for (const length of lengths) {
        for (const maxChunkBytes of [4, 12, 256, 1 << 20]) {
          const grads = gradients(worldSize, length, length * 31 + maxChunkBytes);
          const counts = grads.map((_, r) => 3 + 5 * r);
          const results = fulfilled(await runRing(grads, { counts, maxChunkBytes, capacity: 1 }));
          const total = counts.reduce((a, b) => a + b, 0);
          for (const r of results) {
            expect(r.gradient.length).toBe(length);
            expect(r.samples).toBe(total);
          }
          expectIdentical(results);
          expectCloseToAverage(results[0]!.gradient, grads, counts);
        }
      }
    });
  }

  it('successive steps can share the same links', async () => {
    const grads = gradients(3, 50, 15);
    const links = createMemoryRing(3, { capacity: 1 });
    const run = (step: number) =>
      Promise.all(
        grads.map((gradient, rank) =>
          ringAllReduce({
            rank,
            worldSize: 3,
            gradient,
            sampleCount: 4,
            link: links[rank]!,
            maxChunkBytes: 8,
            step,
          }),
        ),
      );
    const first = await run(1);
    const second = await run(2);
    expectIdentical([...first, ...second]);
  });

  it('a ring of one returns its gradient exactly, in fresh memory', async () => {
    const [g] = gradients(1, 10, 1);
    const [result] = fulfilled(await runRing([g!], { counts: [5] }));
    expect(bytesOf(result!.gradient).equals(bytesOf(g!))).toBe(true);
    expect(result!.gradient.buffer).not.toBe(g!.buffer);
  });

  it("leaves the callers' gradients untouched and returns memory of its own", async () => {
    const grads = gradients(4, 101, 2);
    const copies = grads.map((g) => g.slice());
    const results = fulfilled(await runRing(grads, { maxChunkBytes: 16 }));
    grads.forEach((g, r) => {
      expect(bytesOf(g).equals(bytesOf(copies[r]!))).toBe(true);
      expect(results[r]!.gradient.buffer).not.toBe(g.buffer);
    });
  });

  it('accepts payloads at unaligned byte offsets (as protobuf decoders hand them out)', async () => {
    const grads = gradients(3, 50, 3);
    const unaligned = (_rank: number, link: RingLink): RingLink => ({
      ...link,
      send(m, signal) {
        const shifted = new Uint8Array(m.data.byteLength + 1).subarray(1);
        shifted.set(m.data);
        return link.send({ ...m, data: shifted }, signal);
      },
    });
    const plain = fulfilled(await runRing(grads));
    const shifted = fulfilled(await runRing(grads, { wrap: unaligned }));
    expect(bytesOf(shifted[2]!.gradient).equals(bytesOf(plain[0]!.gradient))).toBe(true);
  });

  it('the checksum is the CRC-32 of the result bytes, so it differs when one value does', async () => {
    const grads = gradients(3, 20, 4);
    const [a] = fulfilled(await runRing(grads));
    grads[0]![3] = grads[0]![3]! + 0.5;
    const [b] = fulfilled(await runRing(grads));
    expect(a!.checksum).toMatch(/^[0-9a-f]{8}$/);
    expect(b!.checksum).not.toBe(a!.checksum);
  });
});

describe('ringAllReduce: 16-bit traffic (--gradient-dtype float16 | bfloat16)', () => {
  /** Unit roundoff of each 16-bit dtype, and float16's subnormal spacing (absolute). */
  const UNIT: Record<'float16' | 'bfloat16', number> = { float16: 2 ** -11, bfloat16: 2 ** -8 };
  const F16_SUBNORMAL = 2 ** -24;

  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`${dtype}: bit-identical replicas holding ${dtype} values, within (N + 2) roundings of the exact average`, async () => {
      for (let worldSize = 2; worldSize <= 5; worldSize++) {
        for (const maxChunkBytes of [2, 64, 1 << 20]) {
          const length = 1001;
          const grads = gradients(worldSize, length, worldSize * 13 + maxChunkBytes);
          const counts = grads.map((_, r) => (r === 1 ? 0 : 3 + 5 * r));
          const results = fulfilled(await runRing(grads, { counts, maxChunkBytes, dtype }));
          expectIdentical(results);
          const result = results[0]!;
          // Every value is one the wire can carry: rounding it again changes nothing.
          const again = result.gradient.slice();
          roundToDtype(again, dtype);
          expect(bytesOf(again).equals(bytesOf(result.gradient))).toBe(true);
          const total = counts.reduce((a, b) => a + b, 0);
          for (let i = 0; i < length; i++) {
            let exact = 0;
            let largest = 0;
            for (let r = 0; r < worldSize; r++) {
              if (counts[r] === 0) continue;
              exact += (counts[r]! * grads[r]![i]!) / total;
              largest = Math.max(largest, Math.abs(grads[r]![i]!));
            }
            // Partial means never exceed the largest |g|, and each of the N - 1 hops and the
            // owner's final value round once (float16 subnormals: absolute spacing instead).
            const bound = (worldSize + 2) * (UNIT[dtype] * largest + F16_SUBNORMAL);
            expect(Math.abs(result.gradient[i]! - exact)).toBeLessThanOrEqual(bound);
          }
        }
      }
    });
  }

  it('moves half the bytes of float32', async () => {
    for (const worldSize of [2, 3, 4]) {
      const grads = gradients(worldSize, 4096, 3);
      const wide = fulfilled(await runRing(grads, { maxChunkBytes: 1024 }));
      const half = fulfilled(await runRing(grads, { maxChunkBytes: 1024, dtype: 'float16' }));
      for (let rank = 0; rank < worldSize; rank++) {
        expect(half[rank]!.sentBytes * 2).toBe(wide[rank]!.sentBytes);
      }
    }
  });

  it('float16 stays in range with large sample counts (values on the wire are means, not sums)', async () => {
    // 0.5 x 100,000 samples would be 50,000 per member: two such partial sums overflow float16.
    const grads = [0, 1, 2, 3].map(() => new Float32Array(64).fill(0.5));
    const results = fulfilled(
      await runRing(grads, { counts: [100_000, 100_000, 100_000, 100_000], dtype: 'float16' }),
    );
    expectIdentical(results);
    expect(Array.from(new Set(results[0]!.gradient))).toEqual([0.5]);
  });

  it('a gradient beyond float16 range fails with NUMERIC naming this member and bfloat16', async () => {
    const grads = gradients(3, 48, 4);
    grads[0]![5] = 1e5;
    const settled = await runRing(grads, { dtype: 'float16' });
    const own = settled[0]!;
    expect(own.status).toBe('rejected');
    const error = (own as PromiseRejectedResult).reason;
    expect(hasErrorCode(error, 'NUMERIC')).toBe(true);
    expect(String(error.message)).toMatch(
      /rank 0: the value [\d.]+ at index 5 does not fit float16 .*--gradient-dtype bfloat16/,
    );
    for (const s of settled) expect(s.status).toBe('rejected');
  });

  it('a float32 message to a float16 ring is refused as MISMATCH', async () => {
    const grads = gradients(3, 48, 5);
    const settled = await runRing(grads, {
      dtype: 'float16',
      wrap: tamperWith(1, 0, (m) => ({ ...m, dtype: 'float32' })),
    });
    const error = (settled[2] as PromiseRejectedResult).reason;
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect(String(error.message)).toMatch(/from rank 1 .*values are float32, expected float16/);
  });
});

describe('ringAllReduce: pipelining', () => {
  it('a member forwards chunk 0 of a round before the last chunk of the previous round has arrived', async () => {
    // 3 members, 300 values: segments of 100 values, 25 chunks of 4 values each per round.
    const log: string[] = [];
    const logging = (rank: number, link: RingLink): RingLink => ({
      ...link,
      send(m, signal) {
        log.push(`${rank} sent ${m.phase} ${m.round} ${m.chunk}`);
        return link.send(m, signal);
      },
      async next(signal) {
        const m = await link.next(signal);
        log.push(`${rank} got ${m.phase} ${m.round} ${m.chunk}`);
        return m;
      },
    });
    fulfilled(await runRing(gradients(3, 300, 14), { wrap: logging, maxChunkBytes: 16 }));
    for (let rank = 0; rank < 3; rank++) {
      for (const [phase, round, previous] of [
        ['reduce-scatter', 1, 'reduce-scatter 0'],
        ['all-gather', 0, 'reduce-scatter 1'],
        ['all-gather', 1, 'all-gather 0'],
      ] as const) {
        const forwarded = log.indexOf(`${rank} sent ${phase} ${round} 0`);
        const lastArrived = log.indexOf(`${rank} got ${previous} 24`);
        expect(forwarded).toBeGreaterThanOrEqual(0);
        expect(forwarded).toBeLessThan(lastArrived);
      }
    }
  });
});

describe('ringAllReduce: members without samples', () => {
  it('a member with sampleCount 0 contributes nothing, even with NaN and Infinity in its gradient', async () => {
    const grads = gradients(4, 30, 5);
    grads[2]!.fill(Number.NaN);
    grads[2]![1] = Number.POSITIVE_INFINITY;
    const counts = [4, 9, 0, 1];
    const results = fulfilled(await runRing(grads, { counts, maxChunkBytes: 8 }));
    for (const r of results) expect(r.samples).toBe(14);
    expectIdentical(results);
    expectCloseToAverage(results[0]!.gradient, grads, counts);
  });

  it('when every count is 0 the result is all zeros (+0) on every member', async () => {
    const grads = gradients(3, 11, 6).map((g) => g.fill(Number.NaN));
    const results = fulfilled(await runRing(grads, { counts: [0, 0, 0] }));
    for (const r of results) {
      expect(r.samples).toBe(0);
      expect(bytesOf(r.gradient).equals(Buffer.alloc(44))).toBe(true);
    }
  });
});

describe('ringAllReduce: bytes moved per member', () => {
  it('each member sends 2 (N - 1) / N x the vector bytes (within 8 bytes), the bandwidth-optimal amount', async () => {
    for (let worldSize = 2; worldSize <= 6; worldSize++) {
      for (const length of [1000, 1001, 4099]) {
        const sent = new Array<number>(worldSize).fill(0);
        const messages = new Array<number>(worldSize).fill(0);
        const counting = (rank: number, link: RingLink): RingLink => ({
          ...link,
          async send(m, signal) {
            await link.send(m, signal);
            sent[rank]! += m.data.byteLength;
            messages[rank]! += 1;
          },
        });
        const maxChunkBytes = 256;
        const grads = gradients(worldSize, length, 7);
        const results = fulfilled(await runRing(grads, { wrap: counting, maxChunkBytes }));
        const segments = ringSegments(length, worldSize);
        const vectorBytes = 4 * length;
        const optimal = (2 * (worldSize - 1) * vectorBytes) / worldSize;
        for (let rank = 0; rank < worldSize; rank++) {
          // Everything but the segments it owns after each phase: (r + 1) and (r + 2) mod N.
          const exact =
            4 *
            (2 * length -
              segments[(rank + 1) % worldSize]!.size -
              segments[(rank + 2) % worldSize]!.size);
          expect(sent[rank]).toBe(exact);
          expect(Math.abs(sent[rank]! - optimal)).toBeLessThanOrEqual(8);
          expect(results[rank]!.sentBytes).toBe(sent[rank]);
          expect(results[rank]!.sentMessages).toBe(messages[rank]);
          // One message per chunk: at most 2 (N - 1) x (chunks of the largest segment).
          const chunksPerSegment = Math.ceil(segments[0]!.size / (maxChunkBytes / 4));
          expect(messages[rank]).toBeLessThanOrEqual(2 * (worldSize - 1) * chunksPerSegment);
        }
      }
    }
  });
});

/** Wraps rank `rank`'s link so that its `index`-th message (from 0) goes out as `tamper` says. */
function tamperWith(
  target: number,
  index: number,
  tamper: (m: RingMessage) => RingMessage,
): (rank: number, link: RingLink) => RingLink {
  return (rank, link) => {
    if (rank !== target) return link;
    let count = 0;
    return {
      ...link,
      send(m, signal) {
        const i = count++;
        return link.send(i === index ? tamper(m) : m, signal);
      },
    };
  };
}

/** Swaps rank `target`'s messages `index` and `index + 1`. */
function swapMessages(target: number, index: number): (rank: number, link: RingLink) => RingLink {
  return (rank, link) => {
    if (rank !== target) return link;
    let count = 0;
    let held: RingMessage | undefined;
    return {
      ...link,
      async send(m, signal) {
        const i = count++;
        if (i === index) {
          held = m;
          return;
        }
        await link.send(m, signal);
        if (i === index + 1 && held) await link.send(held, signal);
      },
    };
  };
}

function withFloat(m: RingMessage, value: number): RingMessage {
  const data = m.data.slice();
  new DataView(data.buffer).setFloat32(0, value, true);
  return { ...m, data };
}

describe('ringAllReduce: a peer that sends the wrong thing is refused, and every member settles', () => {
  const cases: {
    name: string;
    wrap: (rank: number, link: RingLink) => RingLink;
    code: ShardlineErrorCode;
    says: RegExp;
  }[] = [
    {
      name: 'the wrong step',
      wrap: tamperWith(1, 1, (m) => ({ ...m, step: m.step + 1 })),
      code: 'MISMATCH',
      says: /step 7, rank 2: refused the message from rank 1 .*step 8, expected step 7/,
    },
    {
      name: 'NaN',
      wrap: tamperWith(1, 1, (m) => withFloat(m, Number.NaN)),
      code: 'NUMERIC',
      says: /rank 2: refused the message from rank 1 .*holds NaN at index \d+; expected finite/,
    },
    {
      name: 'Infinity',
      wrap: tamperWith(1, 2, (m) => withFloat(m, Number.NEGATIVE_INFINITY)),
      code: 'NUMERIC',
      says: /from rank 1 .*holds -Infinity/,
    },
    {
      name: 'a chunk shorter than its count',
      wrap: tamperWith(1, 1, (m) => ({ ...m, data: m.data.subarray(0, m.data.byteLength - 4) })),
      code: 'DATA_CORRUPT',
      says: /from rank 1 .*wrong size: expected 4 values \(16 bytes\), found count 4 with 12 bytes/,
    },
    {
      name: 'an oversized chunk',
      wrap: tamperWith(1, 1, (m) => ({ ...m, count: m.count + 1, data: new Uint8Array(20) })),
      code: 'DATA_CORRUPT',
      says: /from rank 1 .*wrong size: expected 4 values/,
    },
    {
      name: 'chunks out of order',
      wrap: swapMessages(1, 1),
      code: 'DATA_CORRUPT',
      says: /from rank 1 .*out of order: expected reduce-scatter round 0 segment 1 chunk 1 at offset 28, found reduce-scatter round 0 segment 1 chunk 2 at offset 32/,
    },
    {
      name: 'another sender rank',
      wrap: tamperWith(1, 0, (m) => ({ ...m, sender: 3 })),
      code: 'MISMATCH',
      says: /from rank 1 .*comes from rank 3, expected rank 1/,
    },
    {
      name: 'a sample count that disagrees within a round',
      wrap: tamperWith(1, 1, (m) => ({ ...m, samples: m.samples + 1 })),
      code: 'MISMATCH',
      says: /from rank 1 .*says 9 samples, expected 8/,
    },
    {
      name: 'a dtype it does not use',
      wrap: tamperWith(1, 1, (m) => ({ ...m, dtype: 'float16' as RingMessage['dtype'] })),
      code: 'MISMATCH',
      says: /from rank 1 .*values are float16, expected float32/,
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.name} with ${c.code} naming the peer, and no member hangs`, async () => {
      // 4 members, 96 values: segments of 24 values, 6 chunks of 4 each per segment.
      const grads = gradients(4, 96, 8);
      const settled = await runRing(grads, { wrap: c.wrap, maxChunkBytes: 16 });
      const receiver = settled[2]!;
      expect(receiver.status).toBe('rejected');
      const error = (receiver as PromiseRejectedResult).reason;
      expect(hasErrorCode(error, c.code)).toBe(true);
      expect(String(error.message)).toMatch(c.says);
      expect(error.details).toMatchObject({ step: 7, rank: 2, peer: 1 });
      // Tampering in the first reduce-scatter round: nobody can finish, and everybody knows.
      for (const s of settled) {
        expect(s.status).toBe('rejected');
        expect(isShardlineError((s as PromiseRejectedResult).reason)).toBe(true);
      }
    });
  }

  it('an all-gather total that differs from the one the receiver computed is refused as MISMATCH', async () => {
    const grads = gradients(3, 30, 9);
    const doubled = (rank: number, link: RingLink): RingLink =>
      rank !== 0
        ? link
        : {
            ...link,
            send: (m, signal) =>
              link.send(m.phase === 'all-gather' ? { ...m, samples: m.samples * 2 } : m, signal),
          };
    const settled = await runRing(grads, { wrap: doubled, maxChunkBytes: 16 });
    const error = (settled[1] as PromiseRejectedResult).reason;
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect(error.message).toMatch(
      /says 48 samples, expected 24 \(the total this member computed\)/,
    );
  });
});

describe('ringAllReduce: failures and aborts settle every member promptly', () => {
  it('a member whose own gradient is not finite fails with NUMERIC naming itself; its neighbours get CONNECTION_LOST', async () => {
    const grads = gradients(4, 40, 10);
    grads[1]![17] = Number.NaN;
    const settled = await runRing(grads);
    const own = (settled[1] as PromiseRejectedResult).reason;
    expect(hasErrorCode(own, 'NUMERIC')).toBe(true);
    expect(own.message).toMatch(/rank 1: this member's own gradient holds NaN at index 17/);
    for (const rank of [0, 2, 3]) {
      const reason = (settled[rank] as PromiseRejectedResult).reason;
      expect(hasErrorCode(reason, 'CONNECTION_LOST')).toBe(true);
    }
  });

  it('invalid options reject with INVALID_ARGUMENT and still release the neighbours', async () => {
    const grads = gradients(3, 12, 11);
    const settled = await runRing(grads, { counts: [1, -1, 1] });
    expect(hasErrorCode((settled[1] as PromiseRejectedResult).reason, 'INVALID_ARGUMENT')).toBe(
      true,
    );
    expect(settled.every((s) => s.status === 'rejected')).toBe(true);
  });

  it('an abort rejects every waiting member with the reason within 100 ms', async () => {
    const grads = gradients(4, 4000, 12);
    const controller = new AbortController();
    const reason = new Error('deadline');
    // Rank 3 never shows up, so the others wait on it until the abort.
    const running = runRing(grads, { signal: () => controller.signal, absent: [3] });
    await new Promise((resolve) => setTimeout(resolve, 30));
    const abortedAt = performance.now();
    controller.abort(reason);
    const settled = await running;
    expect(performance.now() - abortedAt).toBeLessThan(100);
    for (const rank of [0, 1, 2]) {
      expect(settled[rank]).toEqual({ status: 'rejected', reason });
    }
  });

  it('aborting one member rejects it with its reason and the others with CONNECTION_LOST', async () => {
    const grads = gradients(5, 2000, 13);
    const controllers = grads.map(() => new AbortController());
    const start = performance.now();
    const running = runRing(grads, {
      signal: (rank) => controllers[rank]!.signal,
      absent: [4],
    });
    setTimeout(() => controllers[0]!.abort(new Error('stop rank 0')), 10);
    const settled = await running;
    expect(performance.now() - start).toBeLessThan(1000);
    expect((settled[0] as PromiseRejectedResult).reason.message).toBe('stop rank 0');
    for (const rank of [1, 2, 3]) {
      const reason = (settled[rank] as PromiseRejectedResult).reason;
      expect(hasErrorCode(reason, 'CONNECTION_LOST')).toBe(true);
    }
  });

  it('a signal aborted before the call rejects at once with its reason', async () => {
    const [link] = createMemoryRing(2);
    const reason = new Error('already cancelled');
    await expect(
      ringAllReduce({
        rank: 0,
        worldSize: 2,
        gradient: new Float32Array(4),
        sampleCount: 1,
        link: link!,
        maxChunkBytes: 16,
        step: 0,
        signal: AbortSignal.abort(reason),
      }),
    ).rejects.toBe(reason);
  });
});
