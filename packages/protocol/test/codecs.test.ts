import { describe, expect, it } from 'vitest';
import { bytesPerElement, DataType, decodeTensor, encodeTensor } from '../src/index.js';

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
