import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToFloat32,
  bfloat16ToFloat32,
  bytesPerElement,
  CRC32_IMPLEMENTATION,
  crc32,
  crc32Portable,
  DataType,
  decodeTensor,
  encodeTensor,
  float16BitsToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToBfloat16Bits,
  float32ToFloat16,
  float32ToFloat16Bits,
} from '../src/index.js';

/** The float32 value of a bit pattern. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}
/** The bit pattern of a float32 value. */
function bitsOf(value: number): number {
  return new Uint32Array(new Float32Array([value]).buffer)[0]!;
}

describe('float16', () => {
  // Reference bit patterns from IEEE 754 binary16 tables.
  const known: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff], // just below the midpoint to infinity
    [65520, 0x7c00], // the midpoint: ties to even, and the even neighbour is infinity
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // half the smallest subnormal: tie, rounds to even (zero)
    [f32(bitsOf(2 ** -25) + 1), 0x0001], // just above that half: rounds up
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps: rounds to even (2)
    [2 ** -26, 0x0000],
    [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 and 0x3c01: even is 0x3c00
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02: even is 0x3c02
    [2049, 0x6800], // ulp 2 at 2048: tie rounds to even 2048
    [2051, 0x6802],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
  ];

  it('encodes known values to their IEEE binary16 bit patterns (round to nearest even)', () => {
    for (const [value, bits] of known) {
      expect(float32ToFloat16Bits(value), `float16 of ${value}`).toBe(bits);
    }
  });

  it('keeps NaN a NaN, quieted, with sign and top payload bits', () => {
    expect(float32ToFloat16Bits(Number.NaN)).toBe(0x7e00);
    expect(float32ToFloat16Bits(f32(0xffc00000))).toBe(0xfe00); // negative quiet NaN
    // A NaN whose payload sits only in the low 13 bits must not become infinity.
    const lowPayload = float32ToFloat16Bits(f32(0x7f800001));
    expect(lowPayload & 0x7c00).toBe(0x7c00);
    expect(lowPayload & 0x3ff).not.toBe(0);
    expect(Number.isNaN(float16BitsToFloat32(0x7e00))).toBe(true);
    expect(Number.isNaN(float16BitsToFloat32(0x7c01))).toBe(true);
  });

  it('decodes every one of the 65,536 patterns exactly and re-encodes it to itself', () => {
    const wrong: string[] = [];
    const all = float16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    for (let h = 0; h < 65536; h++) {
      const value = float16BitsToFloat32(h);
      const nan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      // NaNs come back quieted with their payload; everything else exactly.
      const expected = nan ? h | 0x200 : h;
      if (nan !== Number.isNaN(value) || float32ToFloat16Bits(value) !== expected) {
        wrong.push(h.toString(16));
      }
      if (bitsOf(all[h]!) !== bitsOf(value)) wrong.push(`array ${h.toString(16)}`);
    }
    expect(wrong).toEqual([]);
    // Spot checks against the definition: subnormals are m * 2^-24, normals (1 + m/1024) * 2^(e-15).
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(float16BitsToFloat32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(float16BitsToFloat32(0x3555)).toBe((1 + 0x155 / 1024) * 2 ** -2);
    expect(float16BitsToFloat32(0xfbff)).toBe(-65504);
  });

  it('rounds every midpoint between neighbours to the even one, and near-midpoints to the nearer', () => {
    // For each pair of adjacent positive finite float16 values (and the overflow boundary), the
    // exact midpoint is a float32: it must round to the even pattern.
    const wrong: string[] = [];
    for (let h = 0; h < 0x7c00; h++) {
      const lo = float16BitsToFloat32(h);
      const hi = h + 1 === 0x7c00 ? 65536 : float16BitsToFloat32(h + 1);
      const mid = (lo + hi) / 2;
      const even = (h & 1) === 0 ? h : h + 1;
      if (
        Math.fround(mid) !== mid ||
        float32ToFloat16Bits(mid) !== even ||
        float32ToFloat16Bits(f32(bitsOf(mid) - 1)) !== h ||
        float32ToFloat16Bits(f32(bitsOf(mid) + 1)) !== h + 1 ||
        float32ToFloat16Bits(-mid) !== (even | 0x8000)
      ) {
        wrong.push(h.toString(16));
      }
    }
    expect(wrong).toEqual([]);
  });

  it('converts arrays like the scalar functions, and round-trips within half an ulp', () => {
    const values = Float32Array.from(
      { length: 10_000 },
      (_, i) => Math.sin(i) * 10 ** ((i % 9) - 4),
    );
    const bits = float32ToFloat16(values);
    for (let i = 0; i < values.length; i++) expect(bits[i]).toBe(float32ToFloat16Bits(values[i]!));
    const back = float16ToFloat32(bits);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      // Relative error of binary16 is at most 2^-11 for normal values; absolute 2^-25 below.
      expect(Math.abs(back[i]! - v)).toBeLessThanOrEqual(
        Math.max(Math.abs(v) * 2 ** -11, 2 ** -25),
      );
    }
  });
});

describe('bfloat16', () => {
  it('encodes known values to their bit patterns (round to nearest even)', () => {
    const known: Array<[number, number]> = [
      [1, 0x3f80],
      [-1, 0xbf80],
      [Math.PI, 0x4049], // 0x40490fdb: low half below the midpoint
      [f32(0x3f808000), 0x3f80], // tie: even is 0x3f80
      [f32(0x3f818000), 0x3f82], // tie: even is 0x3f82
      [f32(0x3f808001), 0x3f81], // just above the tie
      [f32(0x7f7fffff), 0x7f80], // float32 max rounds past bfloat16 max: infinity
      [f32(0x7f7f7fff), 0x7f7f],
      [Number.POSITIVE_INFINITY, 0x7f80],
      [Number.NEGATIVE_INFINITY, 0xff80],
      [f32(0x00000001), 0x0000], // the smallest float32 subnormal rounds to zero
      [f32(0x00008000), 0x0000], // tie at zero: even
      [f32(0x00018000), 0x0002],
    ];
    for (const [value, bits] of known) {
      expect(float32ToBfloat16Bits(value), `bfloat16 of ${value}`).toBe(bits);
    }
  });

  it('keeps NaN a NaN, including payloads only in the dropped low bits', () => {
    expect(float32ToBfloat16Bits(Number.NaN)).toBe(0x7fc0);
    expect(float32ToBfloat16Bits(f32(0xffc00000))).toBe(0xffc0);
    expect(float32ToBfloat16Bits(f32(0x7f800001))).toBe(0x7fc0);
    expect(Number.isNaN(bfloat16BitsToFloat32(0x7f81))).toBe(true);
  });

  it('round-trips all 65,536 patterns', () => {
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const values = bfloat16ToFloat32(bits);
    // Read bits through an integer view: a signalling NaN read as a JS number comes back quieted.
    const valueBits = new Uint32Array(values.buffer);
    const again = float32ToBfloat16(values);
    const wrong: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const nan = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      // Decoding is exact (the pattern becomes the upper half); NaNs re-encode quieted.
      if (valueBits[h] !== (h << 16) >>> 0 || again[h] !== (nan ? h | 0x40 : h)) {
        wrong.push(h.toString(16));
      }
    }
    expect(wrong).toEqual([]);
  });
});

describe('encodeTensor / decodeTensor', () => {
  it('encodes float32 as little-endian bytes without copying', () => {
    const values = new Float32Array([1, -2, 0.5]);
    const bytes = encodeTensor(values, DataType.FLOAT32);
    expect(bytes.buffer).toBe(values.buffer);
    expect([...bytes.subarray(0, 4)]).toEqual([0x00, 0x00, 0x80, 0x3f]); // 1.0f little-endian
  });

  it('decodes aligned float32 bytes as a view and copies only on request', () => {
    const values = new Float32Array([3, 4, 5]);
    const bytes = encodeTensor(values);
    const view = decodeTensor(bytes, DataType.FLOAT32);
    expect(view.buffer).toBe(values.buffer);
    const copy = decodeTensor(bytes, DataType.FLOAT32, { copy: true });
    expect(copy.buffer).not.toBe(values.buffer);
    expect([...copy]).toEqual([3, 4, 5]);
  });

  it('copies bytes at an unaligned offset, such as a slice of a pooled Buffer', () => {
    const values = new Float32Array([1.5, -7.25, 1e-30, 3e38]);
    const backing = Buffer.alloc(3 + values.byteLength);
    backing.set(encodeTensor(values), 3);
    const unaligned = backing.subarray(3); // byteOffset 3 (plus the pool offset): not a multiple of 4
    expect(unaligned.byteOffset % 4).not.toBe(0);
    const decoded = decodeTensor(unaligned, DataType.FLOAT32);
    expect([...decoded]).toEqual([...values]);
    expect(decoded.byteOffset % 4).toBe(0);
    // A small Buffer.from() comes out of Node's shared pool at some offset; decoding must work
    // whatever that offset is.
    const pooled = Buffer.from(encodeTensor(values));
    expect([...decodeTensor(pooled, DataType.FLOAT32)]).toEqual([...values]);
  });

  it('encodes and decodes float16 and bfloat16 with 2 bytes per element', () => {
    const values = new Float32Array([1, -2, 0.5, 65504, Number.POSITIVE_INFINITY]);
    for (const dtype of [DataType.FLOAT16, DataType.BFLOAT16]) {
      const bytes = encodeTensor(values, dtype);
      expect(bytes.byteLength).toBe(values.length * bytesPerElement(dtype));
      expect([...decodeTensor(bytes, dtype)]).toEqual(
        dtype === DataType.FLOAT16
          ? [1, -2, 0.5, 65504, Number.POSITIVE_INFINITY]
          : [1, -2, 0.5, 65536, Number.POSITIVE_INFINITY],
      );
    }
    // float16 1.0 is 0x3c00: little-endian bytes 00 3c.
    expect([...encodeTensor(new Float32Array([1]), DataType.FLOAT16)]).toEqual([0x00, 0x3c]);
    // Odd offsets are copied for 16-bit dtypes too.
    const odd = Buffer.alloc(5);
    odd.set(encodeTensor(new Float32Array([1, -2]), DataType.FLOAT16), 1);
    expect([...decodeTensor(odd.subarray(1), DataType.FLOAT16)]).toEqual([1, -2]);
  });

  it('refuses bytes that are not whole elements, and unknown dtypes', () => {
    expect(() => decodeTensor(new Uint8Array(6), DataType.FLOAT32)).toThrowError(
      expect.objectContaining({ code: 'MISMATCH' }),
    );
    expect(() => encodeTensor(new Float32Array(1), DataType.UNSPECIFIED)).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => bytesPerElement(99 as DataType)).toThrowError(/float32, float16 or bfloat16/);
  });
});

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
