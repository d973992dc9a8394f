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
 * The 16-bit conversions themselves live in `@shardline/core/halfFloat` (the ring all-reduce
 * rounds with the same functions); they are re-exported here, where wire users look for them.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';
import {
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
} from '@shardline/core/halfFloat';
import { DataType } from './gen/shardline/v1/tensor.js';

export {
  bfloat16BitsToFloat32,
  bfloat16ToFloat32,
  float16BitsToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToBfloat16Bits,
  float32ToFloat16,
  float32ToFloat16Bits,
} from '@shardline/core/halfFloat';

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
