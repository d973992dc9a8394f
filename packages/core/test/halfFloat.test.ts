import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToFloat32,
  bfloat16ToFloat32,
  float16BitsToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToBfloat16Bits,
  float32ToFloat16,
  float32ToFloat16Bits,
} from '../src/halfFloat.js';

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
