/**
 * The bytes ring messages carry and the checksum of a result.
 *
 * Values travel little-endian in the job's gradient encoding, as every Shardline tensor does
 * (the protocol package's codecs use the same encodings and the same conversions, from
 * `@shardline/core/halfFloat`), so a gRPC transport can put `data` into a `bytes` field
 * untouched. On little-endian hosts (x86, ARM) float32 encoding is a view of a fresh copy and
 * decoding a view, unless the bytes sit at an unaligned offset (protobuf decoders return such
 * slices), where they are copied once.
 */
import { crc32 } from '@shardline/core/crc32';
import {
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
} from '@shardline/core/halfFloat';
import type { RingDtype } from './types.js';

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes per element of each dtype. */
export const RING_DTYPE_BYTES: Readonly<Record<RingDtype, number>> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
};

function swapInPlace(bytes: Uint8Array, width: number): Uint8Array {
  for (let i = 0; i + width <= bytes.length; i += width) bytes.subarray(i, i + width).reverse();
  return bytes;
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * The wire bytes of `values[from, from + count)` in `dtype` (16-bit encodings round to nearest,
 * ties to even): fresh memory, so the message owns them and the caller may keep writing its
 * working buffer while the message waits in a queue.
 */
export function encodeValues(
  values: Float32Array,
  from: number,
  count: number,
  dtype: RingDtype,
): Uint8Array {
  const slice = values.subarray(from, from + count);
  let bytes: Uint8Array;
  if (dtype === 'float32') bytes = bytesOf(slice.slice());
  else bytes = bytesOf(dtype === 'float16' ? float32ToFloat16(slice) : float32ToBfloat16(slice));
  return HOST_IS_LITTLE_ENDIAN ? bytes : swapInPlace(bytes, RING_DTYPE_BYTES[dtype]);
}

/**
 * The float32 values of wire bytes in `dtype` (whose length the caller has checked is a whole
 * number of elements). 16-bit values widen exactly.
 */
export function decodeValues(bytes: Uint8Array, dtype: RingDtype): Float32Array {
  const width = RING_DTYPE_BYTES[dtype];
  const count = bytes.byteLength / width;
  if (HOST_IS_LITTLE_ENDIAN && dtype === 'float32' && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  }
  const aligned = new Uint8Array(bytes.byteLength);
  aligned.set(bytes);
  if (!HOST_IS_LITTLE_ENDIAN) swapInPlace(aligned, width);
  if (dtype === 'float32') return new Float32Array(aligned.buffer, 0, count);
  const bits = new Uint16Array(aligned.buffer, 0, count);
  return dtype === 'float16' ? float16ToFloat32(bits) : bfloat16ToFloat32(bits);
}

/**
 * Rounds `values` in place to the nearest values of `dtype` (a no-op for float32): what an
 * owner does to its own segment, so that it keeps exactly the bits its all-gather hands out.
 */
export function roundToDtype(values: Float32Array, dtype: RingDtype): void {
  if (dtype === 'float32') return;
  values.set(decodeValues(encodeValues(values, 0, values.length, dtype), dtype));
}

/**
 * CRC-32 (the zlib polynomial) of the little-endian bytes of `values`, as 8 hex digits. Cheap
 * (under 1 ms for 5.6 MB) and enough to tell members apart that ended with different bytes: it
 * guards against bugs and rogue peers, not against an adversary forging collisions.
 */
export function float32Checksum(values: Float32Array): string {
  let bytes = bytesOf(values);
  if (!HOST_IS_LITTLE_ENDIAN) bytes = swapInPlace(bytes.slice(), 4);
  return crc32(bytes).toString(16).padStart(8, '0');
}
