/**
 * CRC-32 (IEEE 802.3, the polynomial zlib, gzip and PNG use) for TensorChunk.payload_crc32.
 *
 * CRC-32 rather than CRC-32C: every language's standard library has it (Node's `zlib.crc32`,
 * Python's `zlib.crc32`, Go's `hash/crc32`), so any peer can check a tensor. It catches sender,
 * relay and reassembly bugs (TCP already guards the bits on the wire).
 *
 * Three implementations, the fastest that loads wins; all give the same values:
 * - `simd`: @node-rs/crc32, an optional dependency with prebuilt binaries for the common
 *   platforms (carry-less multiplication, PCLMULQDQ on x86 and PMULL on ARM): 0.5 ms for the
 *   seed CNN's 5.6 MB here. The checksum runs on both ends of every transfer, so this is the
 *   largest single saving in the transfer path.
 * - `zlib`: Node's `zlib.crc32` (Node 20.15 and later): 1.2 to 1.4 ms for 5.6 MB.
 * - `portable`: a slicing-by-4 table in JavaScript, for older Node 20 releases.
 */
import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';

type Crc32 = (data: Uint8Array, value?: number) => number;

/** Which CRC-32 implementation this process uses; see the module comment. */
export type Crc32Implementation = 'simd' | 'zlib' | 'portable';

/** Loads @node-rs/crc32 if it is installed for this platform and gives the standard check value. */
function loadSimd(): Crc32 | undefined {
  try {
    const loaded = createRequire(import.meta.url)('@node-rs/crc32') as { crc32?: unknown };
    if (typeof loaded.crc32 !== 'function') return undefined;
    const simd = loaded.crc32 as (input: Uint8Array, initialState?: number) => number;
    // The CRC-32 check value of "123456789", and continuation from a previous value, as zlib.
    const check = new TextEncoder().encode('123456789');
    if (simd(check) >>> 0 !== 0xcbf43926) return undefined;
    if (simd(check.subarray(4), simd(check.subarray(0, 4))) >>> 0 !== 0xcbf43926) return undefined;
    return simd;
  } catch {
    // Not installed, no binary for this platform, or a binary this Node cannot load.
    return undefined;
  }
}

const simdCrc32 = loadSimd();
// Older Node 20 releases (before 20.15) lack zlib.crc32.
const zlibCrc32 = (zlib as { crc32?: Crc32 }).crc32;

/** The CRC-32 implementation in use: `simd`, `zlib` or `portable`, fastest first. */
export const CRC32_IMPLEMENTATION: Crc32Implementation = simdCrc32
  ? 'simd'
  : zlibCrc32
    ? 'zlib'
    : 'portable';

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
  if (simdCrc32) return simdCrc32(data, value) >>> 0;
  return zlibCrc32 ? zlibCrc32(data, value) >>> 0 : crc32Portable(data, value);
}
