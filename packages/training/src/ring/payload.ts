/**
 * The bytes ring messages carry and the checksum of a result.
 *
 * Values travel as raw little-endian float32, as every Shardline tensor does (the protocol
 * package's codecs use the same encoding), so a gRPC transport can put `data` into a `bytes`
 * field untouched. On little-endian hosts (x86, ARM) encoding is a view of a fresh copy and
 * decoding a view, unless the bytes sit at an unaligned offset (protobuf decoders return such
 * slices), where they are copied once.
 */
import * as zlib from 'node:zlib';
import type { RingDtype } from './types.js';

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes per element of each dtype. */
export const RING_DTYPE_BYTES: Readonly<Record<RingDtype, number>> = { float32: 4 };

function swap32InPlace(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const a = bytes[i]!;
    const b = bytes[i + 1]!;
    bytes[i] = bytes[i + 3]!;
    bytes[i + 1] = bytes[i + 2]!;
    bytes[i + 2] = b;
    bytes[i + 3] = a;
  }
  return bytes;
}

/**
 * The wire bytes of `values[from, from + count)`: a fresh copy, so the message owns them and
 * the caller may keep writing its working buffer while the message waits in a queue.
 */
export function encodeFloat32(values: Float32Array, from: number, count: number): Uint8Array {
  const copy = values.slice(from, from + count);
  const bytes = new Uint8Array(copy.buffer, copy.byteOffset, copy.byteLength);
  return HOST_IS_LITTLE_ENDIAN ? bytes : swap32InPlace(bytes);
}

/** The float32 values of wire bytes (whose length the caller has checked is a multiple of 4). */
export function decodeFloat32(bytes: Uint8Array): Float32Array {
  if (HOST_IS_LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
  const aligned = new Uint8Array(bytes.byteLength);
  aligned.set(bytes);
  if (!HOST_IS_LITTLE_ENDIAN) swap32InPlace(aligned);
  return new Float32Array(aligned.buffer, 0, bytes.byteLength / 4);
}

type Crc32 = (data: Uint8Array, value?: number) => number;
// zlib.crc32 exists from Node 20.15 on; the package supports 20.11, hence the table fallback.
const zlibCrc32 = (zlib as { crc32?: Crc32 }).crc32;
let crcTable: Uint32Array | undefined;

function portableCrc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * CRC-32 (the zlib polynomial) of the little-endian bytes of `values`, as 8 hex digits. Cheap
 * (about 1 ms for 5.6 MB with zlib) and enough to tell members apart that ended with different
 * bytes: it guards against bugs and rogue peers, not against an adversary forging collisions.
 */
export function float32Checksum(values: Float32Array): string {
  let bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (!HOST_IS_LITTLE_ENDIAN) bytes = swap32InPlace(bytes.slice());
  const crc = zlibCrc32 ? zlibCrc32(bytes) >>> 0 : portableCrc32(bytes);
  return crc.toString(16).padStart(8, '0');
}

/** The portable CRC-32, exported for a test that compares it with zlib's. */
export const crc32ForTest: (data: Uint8Array) => number = portableCrc32;
