import { describe, expect, it } from 'vitest';
import {
  type AssembledTensor,
  chunkTensor,
  createTensorAssembler,
  DataType,
  DEFAULT_CHUNK_BYTES,
  decodeTensor,
  encodeTensor,
  MAX_CHUNK_BYTES,
  MIN_CHUNK_BYTES,
  type TensorAssemblerOptions,
  TensorChunk,
  type TensorMeta,
} from '../src/index.js';

/** The seed CNN's parameter count: the size of every weights and gradient vector. */
const SEED_CNN_PARAMS = 1_413_834;
const FINGERPRINT = '0123456789abcdef';

function metaFor(elements: number, overrides: Partial<TensorMeta> = {}): TensorMeta {
  return {
    dtype: DataType.FLOAT32,
    shape: [elements],
    elementCount: elements,
    layoutFingerprint: FINGERPRINT,
    version: 42n,
    step: 41n,
    ...overrides,
  };
}

/** Deterministic values that exercise every byte position (no zeros, varied exponents). */
function valuesOf(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) * 2 - 1) * 10 ** ((i % 7) - 3);
  }
  return out;
}

/** Chunks as they would arrive from the wire: each one encoded and decoded by the generated code. */
function overTheWire(chunks: Iterable<TensorChunk>): TensorChunk[] {
  return [...chunks].map((c) => TensorChunk.decode(TensorChunk.encode(c).finish()));
}

function pushAll(chunks: TensorChunk[], options: TensorAssemblerOptions = {}): AssembledTensor {
  const assembler = createTensorAssembler(options);
  let result: AssembledTensor | undefined;
  chunks.forEach((chunk, i) => {
    const out = assembler.push(chunk);
    if (i < chunks.length - 1) expect(out).toBeUndefined();
    else result = out;
  });
  expect(assembler.pending).toBe(false);
  expect(result).toBeDefined();
  return result!;
}

/** A copy of a chunk with some fields replaced (the data copied, so tampering stays local). */
function tamper(chunk: TensorChunk, changes: Partial<TensorChunk>): TensorChunk {
  return { ...chunk, data: Buffer.from(chunk.data), ...changes };
}

/** Pushes chunks and returns the error the assembler throws. */
function failureOf(chunks: TensorChunk[], options: TensorAssemblerOptions = {}) {
  const assembler = createTensorAssembler(options);
  try {
    for (const chunk of chunks) assembler.push(chunk);
    assembler.end();
  } catch (error) {
    return error as { code: string; message: string };
  }
  throw new Error('expected the assembler to refuse the chunks');
}

describe('chunkTensor + createTensorAssembler', () => {
  const values = valuesOf(SEED_CNN_PARAMS);
  const bytes = encodeTensor(values);

  for (const [label, chunkBytes, expectedChunks] of [
    ['1 MiB', DEFAULT_CHUNK_BYTES, 6],
    ['256 KiB', MIN_CHUNK_BYTES, 22],
  ] as const) {
    it(`round-trips the seed CNN's 1,413,834 parameters bit-exactly in ${label} chunks`, () => {
      const chunks = overTheWire(chunkTensor(metaFor(SEED_CNN_PARAMS), bytes, chunkBytes));
      expect(chunks).toHaveLength(expectedChunks);
      expect(chunks.every((c) => c.data.byteLength <= chunkBytes)).toBe(true);
      expect(chunks[0]!.meta).toBeDefined();
      expect(chunks.slice(1).every((c) => c.meta === undefined)).toBe(true);
      const tensor = pushAll(chunks, {
        maxTensorBytes: SEED_CNN_PARAMS * 4,
        expectedFingerprint: FINGERPRINT,
        expectedElementCount: SEED_CNN_PARAMS,
      });
      expect(tensor.meta).toEqual(metaFor(SEED_CNN_PARAMS));
      expect(tensor.transferId).toBe(chunks[0]!.transferId);
      const decoded = decodeTensor(tensor.bytes, tensor.meta.dtype);
      expect(decoded.buffer).toBe(tensor.bytes.buffer); // the assembled buffer is aligned: a view
      expect(Buffer.from(decoded.buffer).equals(Buffer.from(bytes))).toBe(true);
    });
  }

  it('round-trips float16 and bfloat16 payloads, and an empty tensor as one empty chunk', () => {
    const small = valuesOf(300_000, 7);
    for (const dtype of [DataType.FLOAT16, DataType.BFLOAT16]) {
      const encoded = encodeTensor(small, dtype);
      const tensor = pushAll(
        overTheWire(chunkTensor(metaFor(small.length, { dtype }), encoded, MIN_CHUNK_BYTES)),
      );
      expect(Buffer.from(tensor.bytes).equals(Buffer.from(encoded))).toBe(true);
    }
    const empty = overTheWire(chunkTensor(metaFor(0, { shape: [0] }), new Uint8Array(0)));
    expect(empty).toHaveLength(1);
    expect(pushAll(empty).bytes.byteLength).toBe(0);
  });

  it('takes one transfer after another on the same assembler', () => {
    const assembler = createTensorAssembler();
    for (const seed of [1, 2, 3]) {
      const v = valuesOf(100_000, seed);
      let out: AssembledTensor | undefined;
      for (const c of chunkTensor(metaFor(v.length), encodeTensor(v), MIN_CHUNK_BYTES)) {
        out = assembler.push(c);
      }
      expect([...decodeTensor(out!.bytes).subarray(0, 3)]).toEqual([...v.subarray(0, 3)]);
    }
  });

  it('reuses its payload buffer between transfers of one size only when asked', () => {
    const chunksOf = (seed: number) =>
      overTheWire(
        chunkTensor(metaFor(100_000), encodeTensor(valuesOf(100_000, seed)), MIN_CHUNK_BYTES),
      );
    for (const reuseBuffer of [false, true]) {
      const assembler = createTensorAssembler({ reuseBuffer });
      const first = chunksOf(1)
        .map((c) => assembler.push(c))
        .at(-1)!;
      const firstCopy = Buffer.from(first.bytes);
      const second = chunksOf(2)
        .map((c) => assembler.push(c))
        .at(-1)!;
      expect(
        Buffer.from(second.bytes).equals(Buffer.from(encodeTensor(valuesOf(100_000, 2)))),
      ).toBe(true);
      // With reuse the first result was overwritten in place; without, it is untouched.
      expect(second.bytes === first.bytes).toBe(reuseBuffer);
      expect(Buffer.from(first.bytes).equals(firstCopy)).toBe(!reuseBuffer);
    }
  });

  it('refuses chunk sizes outside 256 KiB to 4 MiB and payloads that do not match the metadata', () => {
    const meta = metaFor(SEED_CNN_PARAMS);
    expect(() => [...chunkTensor(meta, bytes, MIN_CHUNK_BYTES - 1)]).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => [...chunkTensor(meta, bytes, MAX_CHUNK_BYTES + 1)]).toThrowError(
      /262,144 to 4,194,304/,
    );
    expect(() => [...chunkTensor(meta, bytes.subarray(4))]).toThrowError(
      expect.objectContaining({
        code: 'MISMATCH',
        message: expect.stringContaining('5,655,336 bytes, found 5,655,332'),
      }),
    );
    expect(() => [...chunkTensor({ ...meta, shape: [2, 3] }, bytes)]).toThrowError(
      expect.objectContaining({ code: 'MISMATCH' }),
    );
  });
});

describe('createTensorAssembler refuses broken transfers', () => {
  // 1,000,000 float32 = 4,000,000 bytes = 16 chunks of 256 KiB (the last one shorter).
  const values = valuesOf(1_000_000, 3);
  const good = overTheWire(
    chunkTensor(metaFor(values.length), encodeTensor(values), MIN_CHUNK_BYTES),
  );
  const n = good.length;
  const c = (i: number) => good[i]!;

  it('has a well-formed fixture', () => {
    expect(n).toBe(16);
    expect(pushAll(good).bytes.byteLength).toBe(4_000_000);
  });

  it('chunks out of order', () => {
    const error = failureOf([c(0), c(2), c(1)]);
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toContain('expected chunk 1 of 16, found chunk 2: chunk 1 is missing');
    expect(error.message).toContain('send the tensor again');
  });

  it('a duplicated chunk', () => {
    const error = failureOf([c(0), c(1), c(1)]);
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toContain('expected chunk 2 of 16, found chunk 1 again');
  });

  it('missing chunks in the middle, at the start and at the end', () => {
    expect(failureOf([c(0), c(1), c(5)]).message).toContain('chunks 2 to 4 are missing');
    const start = failureOf([c(1), c(2)]);
    expect(start.code).toBe('DATA_CORRUPT');
    expect(start.message).toContain('expected chunk 0 of a new transfer, found chunk 1 of 16');
    // The stream ends before the last chunk: only end() can tell.
    const end = failureOf(good.slice(0, n - 1));
    expect(end.code).toBe('DATA_CORRUPT');
    expect(end.message).toContain('expected 16 chunks (4,000,000 bytes), received 15');
    // The next transfer starts before this one finished.
    const next = overTheWire(chunkTensor(metaFor(10), encodeTensor(valuesOf(10))));
    const cut = failureOf([...good.slice(0, 3), next[0]!]);
    expect(cut.code).toBe('DATA_CORRUPT');
    expect(cut.message).toContain('was cut short: expected chunk 3 of 16');
  });

  it('wrong byte offsets', () => {
    const error = failureOf([c(0), tamper(c(1), { byteOffset: c(1).byteOffset + 4 })]);
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toContain('expected byte 262,144');
    expect(error.message).toContain('found 262,148');
  });

  it('byte totals that do not add up', () => {
    // The last chunk arrives short: fewer bytes than total_bytes promised.
    const last = c(n - 1);
    const short = failureOf([
      ...good.slice(0, n - 1),
      tamper(last, { data: last.data.subarray(8) }),
    ]);
    expect(short.code).toBe('DATA_CORRUPT');
    expect(short.message).toContain('expected 4,000,000 bytes over 16 chunks, found 3,999,992');
    // A chunk that runs past the end.
    const long = failureOf([
      ...good.slice(0, n - 1),
      tamper(last, { data: Buffer.concat([last.data, Buffer.alloc(4)]) }),
    ]);
    expect(long.code).toBe('DATA_CORRUPT');
    expect(long.message).toContain('overflows');
    // total_bytes changes mid-transfer.
    const changed = failureOf([c(0), tamper(c(1), { totalBytes: 4_000_004 })]);
    expect(changed.code).toBe('DATA_CORRUPT');
    expect(changed.message).toContain('disagrees with chunk 0');
  });

  it('a payload over the size limit, before allocating anything', () => {
    const huge = tamper(c(0), {
      totalBytes: 0xfffffffc,
      meta: metaFor(0x3fffffff),
    });
    const before = process.memoryUsage().arrayBuffers;
    const error = failureOf([huge], { maxTensorBytes: 64 * 1024 * 1024 });
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain(
      'expected at most 67,108,864 bytes, found total_bytes 4,294,967,292',
    );
    // A single chunk larger than the chunk limit.
    const big = failureOf(good, { maxChunkBytes: 100_000 });
    expect(big.code).toBe('INVALID_ARGUMENT');
  });

  it('a checksum mismatch', () => {
    const damaged = tamper(c(7), {});
    damaged.data[1000] = damaged.data[1000]! ^ 0x01; // one flipped bit
    const error = failureOf([...good.slice(0, 7), damaged, ...good.slice(8)]);
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toMatch(
      /fails its checksum: expected CRC-32 0x[0-9a-f]{8} \(from the last chunk\), computed 0x[0-9a-f]{8}/,
    );
    const wrongCrc = failureOf([...good.slice(0, n - 1), tamper(c(n - 1), { payloadCrc32: 0 })]);
    expect(wrongCrc.code).toBe('DATA_CORRUPT');
  });

  it('element count, shape and dtype that disagree', () => {
    const shape = failureOf([
      tamper(c(0), { meta: metaFor(values.length, { shape: [999, 1000] }) }),
    ]);
    expect(shape.code).toBe('MISMATCH');
    expect(shape.message).toContain(
      'shape [999, 1000] holds 999,000 elements, element_count says 1,000,000',
    );
    // float16 declared, but the byte total is float32's.
    const dtype = failureOf([
      tamper(c(0), { meta: metaFor(values.length, { dtype: DataType.FLOAT16 }) }),
    ]);
    expect(dtype.code).toBe('MISMATCH');
    expect(dtype.message).toContain(
      '1,000,000 float16 elements need 2,000,000 bytes, total_bytes says 4,000,000',
    );
    const unknown = failureOf([
      tamper(c(0), { meta: metaFor(values.length, { dtype: DataType.UNSPECIFIED }) }),
    ]);
    expect(unknown.code).toBe('INVALID_ARGUMENT');
    expect(failureOf(good, { expectedElementCount: SEED_CNN_PARAMS }).code).toBe('MISMATCH');
    expect(failureOf(good, { expectedDtypes: [DataType.FLOAT16] }).message).toContain(
      'expected float16, found float32',
    );
  });

  it('a layout fingerprint other than the expected one', () => {
    const error = failureOf(good, { expectedFingerprint: 'fedcba9876543210' });
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toContain(
      `expected layout fingerprint fedcba9876543210, found ${FINGERPRINT}`,
    );
    expect(pushAll(good, { expectedFingerprint: FINGERPRINT }).bytes.byteLength).toBe(4_000_000);
  });

  it('malformed chunks: no metadata on chunk 0, changed metadata later, no transfer id', () => {
    expect(failureOf([tamper(c(0), { meta: undefined })]).code).toBe('INVALID_ARGUMENT');
    const changed = failureOf([
      c(0),
      tamper(c(1), { meta: metaFor(values.length, { version: 43n }) }),
    ]);
    expect(changed.code).toBe('DATA_CORRUPT');
    // Repeating identical metadata on a later chunk is allowed.
    pushAll([c(0), tamper(c(1), { meta: c(0).meta }), ...good.slice(2)]);
    expect(failureOf([tamper(c(0), { transferId: '' })]).code).toBe('INVALID_ARGUMENT');
    expect(failureOf([tamper(c(0), { chunkCount: 0 })]).code).toBe('INVALID_ARGUMENT');
  });

  it('starts afresh after a refusal', () => {
    const assembler = createTensorAssembler();
    assembler.push(c(0));
    expect(() => assembler.push(c(2))).toThrowError(
      expect.objectContaining({ code: 'DATA_CORRUPT' }),
    );
    expect(assembler.pending).toBe(false);
    let out: AssembledTensor | undefined;
    for (const chunk of good) out = assembler.push(chunk);
    expect(out?.bytes.byteLength).toBe(4_000_000);
  });
});
