import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CRC32_IMPLEMENTATION, crc32, crc32Portable } from '../src/crc32.js';

describe('crc32', () => {
  it('matches the standard check value and chains across pieces', () => {
    const data = new TextEncoder().encode('123456789');
    expect(crc32(data)).toBe(0xcbf43926);
    expect(crc32Portable(data)).toBe(0xcbf43926);
    expect(crc32(data.subarray(4), crc32(data.subarray(0, 4)))).toBe(0xcbf43926);
  });

  it('agrees with the portable fallback on random data of odd lengths', () => {
    const data = Uint8Array.from({ length: 100_003 }, (_, i) => (i * 2654435761) >>> 24);
    expect(crc32Portable(data)).toBe(crc32(data));
    expect(crc32Portable(data.subarray(7), crc32Portable(data.subarray(0, 7)))).toBe(crc32(data));
  });

  it('agrees with zlib, whichever implementation is in use, on views at odd offsets', () => {
    const backing = Uint8Array.from({ length: 3 * 1024 * 1024 + 5 }, (_, i) => (i * 40503) >>> 7);
    for (const [start, end] of [
      [0, backing.length],
      [3, 1024 * 1024 + 3],
      [1, 2],
      [17, 17],
    ] as const) {
      const view = backing.subarray(start, end);
      expect(crc32(view)).toBe(zlib.crc32(view) >>> 0);
      expect(crc32(view, 12345)).toBe(zlib.crc32(view, 12345) >>> 0);
    }
    // A Float32Array's bytes, as tensors are checksummed, and a Buffer.
    const floats = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
    expect(crc32(bytes)).toBe(zlib.crc32(bytes) >>> 0);
    expect(crc32(Buffer.from(bytes))).toBe(crc32(bytes));
  });

  it('uses the SIMD implementation where @node-rs/crc32 has a binary for this platform', () => {
    // It is an optional dependency with binaries for Linux, macOS and Windows on x64 and arm64;
    // CI and the development machine are linux-x64, where losing it would double the checksum's
    // cost unnoticed.
    const covered =
      ['linux', 'darwin', 'win32'].includes(process.platform) &&
      ['x64', 'arm64'].includes(process.arch);
    expect(CRC32_IMPLEMENTATION).toBe(
      covered ? 'simd' : expect.stringMatching(/^(zlib|portable)$/),
    );
  });
});
