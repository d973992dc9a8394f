/**
 * The pieces under the ring all-reduce: the segment cut and schedule, the in-memory links
 * (ordering, backpressure, teardown) and the result checksum.
 */
import * as zlib from 'node:zlib';
import { hasErrorCode } from '@shardline/core';
import { describe, expect, it } from 'vitest';
import { createMemoryRing } from '../src/ring/memoryRing.js';
import {
  decodeValues,
  encodeValues,
  float32Checksum,
  RING_DTYPE_BYTES,
  roundToDtype,
} from '../src/ring/payload.js';
import { planRing, ringSegments } from '../src/ring/plan.js';
import type { RingMessage } from '../src/ring/types.js';

function message(chunk: number): RingMessage {
  return {
    step: 1,
    phase: 'reduce-scatter',
    round: 0,
    segment: 0,
    chunk,
    offset: chunk,
    count: 1,
    samples: 1,
    sender: 0,
    dtype: 'float32',
    data: new Uint8Array(4),
  };
}

describe('ringSegments: the same cut on every member', () => {
  it('cuts any length into N contiguous segments whose sizes differ by at most one', () => {
    for (let worldSize = 1; worldSize <= 7; worldSize++) {
      for (const length of [0, 1, 2, 6, 7, 100, 1001]) {
        const segments = ringSegments(length, worldSize);
        expect(segments).toHaveLength(worldSize);
        let start = 0;
        for (const s of segments) {
          expect(s.start).toBe(start);
          start += s.size;
        }
        expect(start).toBe(length);
        const sizes = segments.map((s) => s.size);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });

  it('a vector shorter than the ring has empty segments, each still sent as one empty chunk', () => {
    expect(ringSegments(2, 4).map((s) => s.size)).toEqual([1, 1, 0, 0]);
    const plan = planRing(0, 4, 2, 16);
    expect(plan.send).toHaveLength(6);
    expect(plan.receive.filter((c) => c.count === 0)).toHaveLength(4);
  });

  it('what a member sends is exactly what its right neighbour expects to receive', () => {
    for (let worldSize = 2; worldSize <= 5; worldSize++) {
      for (const [length, chunkElements] of [
        [13, 2],
        [3, 1],
        [40, 100],
      ] as const) {
        for (let rank = 0; rank < worldSize; rank++) {
          const right = planRing((rank + 1) % worldSize, worldSize, length, chunkElements);
          const { send } = planRing(rank, worldSize, length, chunkElements);
          expect(send).toEqual(right.receive);
        }
      }
    }
  });
});

describe('createMemoryRing: ordered, bounded links', () => {
  it('delivers what rank r sends to rank r + 1, in order, around the ring', async () => {
    const links = createMemoryRing(3);
    await links[2]!.send(message(0));
    await links[2]!.send(message(1));
    expect((await links[0]!.next()).chunk).toBe(0);
    expect((await links[0]!.next()).chunk).toBe(1);
  });

  it('a full queue makes send wait until the receiver takes a message (backpressure)', async () => {
    const links = createMemoryRing(2, { capacity: 1 });
    await links[0]!.send(message(0));
    let accepted = false;
    const second = links[0]!.send(message(1)).then(() => {
      accepted = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(accepted).toBe(false);
    expect((await links[1]!.next()).chunk).toBe(0);
    await second;
    expect(accepted).toBe(true);
    expect((await links[1]!.next()).chunk).toBe(1);
  });

  it('abort fails both neighbours with CONNECTION_LOST naming the member, pending or later', async () => {
    const links = createMemoryRing(3, { capacity: 1 });
    const waiting = links[1]!.next();
    await links[2]!.send(message(0));
    const blocked = links[2]!.send(message(1));
    links[0]!.abort(new Error('out of memory'));
    for (const pending of [waiting, blocked, links[1]!.next(), links[2]!.send(message(2))]) {
      const error = await pending.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(hasErrorCode(error, 'CONNECTION_LOST')).toBe(true);
      expect((error as Error).message).toMatch(/rank 0 stopped .*\(out of memory\)/);
    }
  });

  it('a pending next or send rejects with the signal reason when its signal aborts', async () => {
    const links = createMemoryRing(2, { capacity: 1 });
    const controller = new AbortController();
    const reason = new Error('deadline');
    const receive = links[0]!.next(controller.signal);
    await links[0]!.send(message(0));
    const send = links[0]!.send(message(1), controller.signal);
    controller.abort(reason);
    await expect(receive).rejects.toBe(reason);
    await expect(send).rejects.toBe(reason);
    // The withdrawn send left nothing behind: only the first message arrives.
    expect((await links[1]!.next()).chunk).toBe(0);
  });

  it('refuses a world size or capacity below 1', () => {
    expect(() => createMemoryRing(0)).toThrow(/at least 1/);
    expect(() => createMemoryRing(2, { capacity: 0 })).toThrow(/at least 1/);
  });
});

describe('payload and checksum', () => {
  it("the checksum is CRC-32 of the little-endian bytes (zlib's value)", () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const bytes = new Uint8Array(values.buffer);
    const zlibCrc = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
    if (zlibCrc)
      expect(float32Checksum(values)).toBe((zlibCrc(bytes) >>> 0).toString(16).padStart(8, '0'));
    expect(float32Checksum(values)).toMatch(/^[0-9a-f]{8}$/);
  });

  it('decodes bytes at any offset to the same values, in every dtype', () => {
    const values = Float32Array.from([1.5, -2, 3.25]);
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      const encoded = encodeValues(values, 0, 3, dtype);
      expect(encoded.byteLength).toBe(3 * RING_DTYPE_BYTES[dtype]);
      const shifted = new Uint8Array(encoded.byteLength + 1).subarray(1);
      shifted.set(encoded);
      expect(Array.from(decodeValues(shifted, dtype))).toEqual([1.5, -2, 3.25]);
    }
  });

  it('16-bit encodings round to nearest, ties to even, and roundToDtype keeps what the wire keeps', () => {
    // 1 + 2^-11 lies halfway between float16's 1 and 1 + 2^-10: ties go to the even, 1.
    const values = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1]);
    const rounded = values.slice();
    roundToDtype(rounded, 'float16');
    expect(Array.from(rounded)).toEqual([
      1,
      1 + 2 ** -9,
      Array.from(decodeValues(encodeValues(values, 2, 1, 'float16'), 'float16'))[0],
    ]);
    const same = values.slice();
    roundToDtype(same, 'float32');
    expect(same).toEqual(values);
  });
});
