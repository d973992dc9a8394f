/**
 * Tensor codecs: the bytes a tensor travels as, and float16 / bfloat16 conversion.
 *
 * Every wire encoding is little-endian. On little-endian hosts (x86, ARM: nearly all) a
 * Float32Array already is its wire form, so encoding float32 is a view and decoding it is a view
 * too, unless the bytes sit at an offset that is not a multiple of 4. That happens: Node hands
 * out small Buffers as slices of a shared pool, and protobuf decoders return `bytes` fields as
 * slices of the message buffer, both at arbitrary offsets. A Float32Array cannot start there, so
 * those bytes are copied once into fresh, aligned memory.
 *
 * Conversions to 16 bits round to nearest, ties to even (what IEEE 754, CUDA and TensorFlow do),
 * keep infinities and keep NaN a NaN (quieted, sign and top payload bits kept).
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';
import { DataType } from './gen/shardline/v1/tensor.js';

/** True on little-endian hosts, where typed arrays already hold wire-order bytes. */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The wire dtypes this package can encode and decode, in preference order. */
export const SUPPORTED_DTYPES: readonly DataType[] = [
  DataType.FLOAT32,
  DataType.FLOAT16,
  DataType.BFLOAT16,
];

/** A short lower-case name for a dtype, as messages and logs print it ("float16"). */
export function dtypeName(dtype: DataType): string {
  switch (dtype) {
    case DataType.FLOAT32:
      return 'float32';
    case DataType.FLOAT16:
      return 'float16';
    case DataType.BFLOAT16:
      return 'bfloat16';
    case DataType.UNSPECIFIED:
      return 'unspecified';
    default:
      return `unknown dtype ${dtype}`;
  }
}

/**
 * Bytes per element of a wire dtype. Throws `INVALID_ARGUMENT` for UNSPECIFIED and values this
 * version does not know (a newer peer's dtype, or garbage).
 */
export function bytesPerElement(dtype: DataType): number {
  switch (dtype) {
    case DataType.FLOAT32:
      return 4;
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      return 2;
    default:
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Unsupported tensor dtype: expected float32, float16 or bfloat16, found ${dtypeName(dtype)}. ` +
          'The sender must set TensorMeta.dtype to an encoding this Shardline release supports.',
        { details: { dtype } },
      );
  }
}

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

// ---------------------------------------------------------------------------------------------
// Bytes.

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Reverses the byte order of every `width`-byte element, in place (big-endian hosts only). */
function swapInPlace(bytes: Uint8Array, width: 2 | 4): Uint8Array {
  for (let i = 0; i + width <= bytes.length; i += width) {
    if (width === 2) {
      const a = bytes[i]!;
      bytes[i] = bytes[i + 1]!;
      bytes[i + 1] = a;
    } else {
      const a = bytes[i]!;
      const b = bytes[i + 1]!;
      bytes[i] = bytes[i + 3]!;
      bytes[i + 1] = bytes[i + 2]!;
      bytes[i + 2] = b;
      bytes[i + 3] = a;
    }
  }
  return bytes;
}

/**
 * Encodes float32 values as the wire bytes of `dtype`. For float32 on a little-endian host the
 * result is a view of `values` (no copy): do not modify `values` until the bytes are sent.
 *
 * @example
 * ```ts
 * const bytes = encodeTensor(gradient, DataType.FLOAT16); // 2 bytes per element
 * ```
 */
export function encodeTensor(values: Float32Array, dtype: DataType = DataType.FLOAT32): Uint8Array {
  switch (dtype) {
    case DataType.FLOAT32:
      return HOST_IS_LITTLE_ENDIAN ? bytesOf(values) : swapInPlace(bytesOf(values.slice()), 4);
    case DataType.FLOAT16: {
      const bytes = bytesOf(float32ToFloat16(values));
      return HOST_IS_LITTLE_ENDIAN ? bytes : swapInPlace(bytes, 2);
    }
    case DataType.BFLOAT16: {
      const bytes = bytesOf(float32ToBfloat16(values));
      return HOST_IS_LITTLE_ENDIAN ? bytes : swapInPlace(bytes, 2);
    }
    default:
      bytesPerElement(dtype); // throws the explanatory error
      throw new Error('unreachable');
  }
}

/** Options of {@link decodeTensor}. */
export interface DecodeTensorOptions {
  /**
   * Always copy into fresh memory, even when a view would do. Use it to keep the values while
   * letting go of a large buffer they are a slice of.
   */
  copy?: boolean;
}

/**
 * Decodes wire bytes of `dtype` into float32 values. float32 bytes that are 4-byte aligned on a
 * little-endian host come back as a view of `bytes` (no copy); anything else is copied.
 * Throws `MISMATCH` when the byte length is not a whole number of elements.
 */
export function decodeTensor(
  bytes: Uint8Array,
  dtype: DataType = DataType.FLOAT32,
  options: DecodeTensorOptions = {},
): Float32Array {
  const width = bytesPerElement(dtype);
  if (bytes.byteLength % width !== 0) {
    throw new ShardlineError(
      'MISMATCH',
      `Tensor bytes do not hold whole ${dtypeName(dtype)} elements: expected a multiple of ${width} ` +
        `bytes, found ${formatCount(bytes.byteLength)}. The payload is truncated or was encoded with another dtype.`,
    );
  }
  const count = bytes.byteLength / width;
  if (dtype === DataType.FLOAT32) {
    if (HOST_IS_LITTLE_ENDIAN && !options.copy && bytes.byteOffset % 4 === 0) {
      return new Float32Array(bytes.buffer, bytes.byteOffset, count);
    }
    const out = new Float32Array(count);
    bytesOf(out).set(bytes);
    if (!HOST_IS_LITTLE_ENDIAN) swapInPlace(bytesOf(out), 4);
    return out;
  }
  let bits: Uint16Array;
  if (HOST_IS_LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
    bits = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  } else {
    bits = new Uint16Array(count);
    bytesOf(bits).set(bytes);
    if (!HOST_IS_LITTLE_ENDIAN) swapInPlace(bytesOf(bits), 2);
  }
  return dtype === DataType.FLOAT16 ? float16ToFloat32(bits) : bfloat16ToFloat32(bits);
}
