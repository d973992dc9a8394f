/**
 * CRC-32 (IEEE 802.3, the polynomial zlib, gzip and PNG use) for TensorChunk.payload_crc32.
 *
 * CRC-32 rather than CRC-32C: Node ships a native CRC-32 (`zlib.crc32`, Node 20.15 and 22.2),
 * about 2 GB/s here, while CRC-32C would need a JavaScript loop several times slower or a native
 * addon. Both detect every burst error up to 32 bits; the checksum is there to catch sender,
 * relay and reassembly bugs (TCP already guards the bits on the wire), so the cheaper one wins.
 */
import * as zlib from 'node:zlib';

type Crc32 = (data: Uint8Array, value?: number) => number;

// Older Node 20 releases (before 20.15) lack zlib.crc32: fall back to a table-driven loop.
const nativeCrc32 = (zlib as { crc32?: Crc32 }).crc32;

let table: Uint32Array | undefined;

function crc32Table(): Uint32Array {
  if (table) return table;
  // Slicing-by-4 tables: four bytes per iteration instead of one.
  table = new Uint32Array(4 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = table[n]!;
    for (let k = 1; k < 4; k++) {
      c = table[c & 0xff]! ^ (c >>> 8);
      table[k * 256 + n] = c >>> 0;
    }
  }
  return table;
}

/** The portable implementation; exported for tests that compare it with the native one. */
export function crc32Portable(data: Uint8Array, value = 0): number {
  const t = crc32Table();
  let crc = ~value >>> 0;
  let i = 0;
  const end4 = data.length & ~3;
  for (; i < end4; i += 4) {
    crc ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    crc =
      t[768 + (crc & 0xff)]! ^
      t[512 + ((crc >>> 8) & 0xff)]! ^
      t[256 + ((crc >>> 16) & 0xff)]! ^
      t[crc >>> 24]!;
  }
  for (; i < data.length; i++) crc = t[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/**
 * CRC-32 of `data`, continuing from `value` (the CRC of the bytes before it), so a payload can be
 * checksummed chunk by chunk: `crc32(b, crc32(a))` equals `crc32(a + b)`.
 *
 * @example
 * ```ts
 * crc32(new TextEncoder().encode('123456789')); // 0xcbf43926
 * ```
 */
export function crc32(data: Uint8Array, value = 0): number {
  return nativeCrc32 ? nativeCrc32(data, value) >>> 0 : crc32Portable(data, value);
}
