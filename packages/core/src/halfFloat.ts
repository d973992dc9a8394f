/**
 * float16 and bfloat16: conversion between float32 values and 16-bit bit patterns.
 *
 * Both the wire codecs (@shardline/protocol) and the ring all-reduce (@shardline/training, which
 * must round its own segment exactly as the wire does) use these, so they live here, below
 * both. No TensorFlow.js: this module is a subpath (`@shardline/core/halfFloat`) that packages
 * without tfjs can import.
 *
 * Conversions to 16 bits round to nearest, ties to even (what IEEE 754, CUDA and TensorFlow do),
 * keep infinities and keep NaN a NaN (quieted, sign and top payload bits kept).
 */
import { formatCount, ShardlineError } from './errors.js';

// ---------------------------------------------------------------------------------------------
// Scalar bit conversions. The array versions below inline the same logic.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * The float16 bit pattern nearest to `value` (ties to even). Out-of-range values become
 * infinities, values below half the smallest subnormal become (signed) zero.
 *
 * @example
 * ```ts
 * float32ToFloat16Bits(1) === 0x3c00; float32ToFloat16Bits(65520) === 0x7c00; // Infinity
 * ```
 */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  return f32BitsToF16(u32[0]!);
}

/** The float32 value of a float16 bit pattern (exact: every float16 is a float32). */
export function float16BitsToFloat32(bits: number): number {
  u32[0] = f16ToF32Bits(bits & 0xffff);
  return f32[0]!;
}

/** The bfloat16 bit pattern nearest to `value` (ties to even). */
export function float32ToBfloat16Bits(value: number): number {
  f32[0] = value;
  return f32BitsToBf16(u32[0]!);
}

/** The float32 value of a bfloat16 bit pattern (exact). */
export function bfloat16BitsToFloat32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Infinity stays infinity; NaN keeps its top payload bits and gets the quiet bit, which
    // also guarantees a non-zero mantissa (a payload only in the low 13 bits would vanish).
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 112; // rebias: float32 bias 127, float16 bias 15
  if (e >= 0x1f) return sign | 0x7c00; // too large even before rounding
  if (e <= 0) {
    // float16 subnormal (or zero): value = m * 2^-24, m = full >> (14 - e).
    const shift = 14 - e;
    if (shift > 24) return sign; // below half the smallest subnormal: rounds to zero
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1) === 1)) m++; // may carry into the smallest normal
    return sign | m;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent, up to infinity (0x7c00).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return h;
}

function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // Inf, NaN with payload
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: shift the mantissa up until its leading 1 becomes the implicit bit.
  let m = mant;
  let e = 113;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

function f32BitsToBf16(x: number): number {
  // NaN: keep sign and top payload bits, set the quiet bit so truncation cannot make it Inf.
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff;
  // Round to nearest even on the low 16 bits; a carry rolls into the exponent (up to Inf).
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

// Every float16 has a float32 twin: decode with one table lookup (256 KiB, built on first use).
let f16Table: Uint32Array | undefined;

function float16Table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  return f16Table;
}

// ---------------------------------------------------------------------------------------------
// Array conversions.

function checkOut<T extends { length: number }>(out: T, length: number, what: string): T {
  if (out.length !== length) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The output array for ${what} has the wrong length: expected ${formatCount(length)} elements, ` +
        `found ${formatCount(out.length)}. Pass an array as long as the input, or none.`,
    );
  }
  return out;
}

/** Converts float32 values to float16 bit patterns (round to nearest even). */
export function float32ToFloat16(values: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ? checkOut(out, values.length, 'float16') : new Uint16Array(values.length);
  const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToF16(src[i]!);
  return dst;
}

/** Converts float16 bit patterns to float32 values (exact). */
export function float16ToFloat32(bits: Uint16Array, out?: Float32Array): Float32Array {
  const dst = out ? checkOut(out, bits.length, 'float32') : new Float32Array(bits.length);
  const dstBits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  const table = float16Table();
  for (let i = 0; i < bits.length; i++) dstBits[i] = table[bits[i]!]!;
  return dst;
}

/** Converts float32 values to bfloat16 bit patterns (round to nearest even). */
export function float32ToBfloat16(values: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ? checkOut(out, values.length, 'bfloat16') : new Uint16Array(values.length);
  const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToBf16(src[i]!);
  return dst;
}

/** Converts bfloat16 bit patterns to float32 values (exact). */
export function bfloat16ToFloat32(bits: Uint16Array, out?: Float32Array): Float32Array {
  const dst = out ? checkOut(out, bits.length, 'float32') : new Float32Array(bits.length);
  const dstBits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < bits.length; i++) dstBits[i] = bits[i]! << 16;
  return dst;
}
