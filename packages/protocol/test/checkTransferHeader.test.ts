import { describe, expect, it } from 'vitest';
import {
  checkTransferHeader,
  chunkTensor,
  DataType,
  MIN_CHUNK_BYTES,
  type TensorAssemblerOptions,
  type TensorMeta,
  type TransferHeaderChunk,
} from '../src/index.js';

const FINGERPRINT = '0123456789abcdef';
const RESEND = 'The transfer was discarded: the sender must send the tensor again, in order.';

/** 1,000 float32 values: 4,000 bytes, one chunk. */
function metaFor(overrides: Partial<TensorMeta> = {}): TensorMeta {
  return {
    dtype: DataType.FLOAT32,
    shape: [10, 100],
    elementCount: 1000,
    layoutFingerprint: FINGERPRINT,
    version: 3n,
    step: 2n,
    ...overrides,
  };
}

function headerOf(overrides: Partial<TransferHeaderChunk> = {}): TransferHeaderChunk {
  return {
    transferId: 't-1',
    chunkIndex: 0,
    chunkCount: 1,
    totalBytes: 4000,
    meta: metaFor(),
    ...overrides,
  };
}

/** The error checkTransferHeader throws for a header. */
function rejectionOf(header: TransferHeaderChunk, options: TensorAssemblerOptions = {}) {
  try {
    checkTransferHeader(header, options);
  } catch (error) {
    return error as { code: string; message: string; details: Record<string, unknown> };
  }
  throw new Error('expected checkTransferHeader to refuse the header');
}

describe('checkTransferHeader accepts', () => {
  it('a consistent header and returns its facts', () => {
    const meta = metaFor();
    expect(
      checkTransferHeader(headerOf({ meta }), {
        maxTensorBytes: 4000,
        expectedFingerprint: FINGERPRINT,
        expectedElementCount: 1000,
        expectedDtypes: [DataType.FLOAT32],
      }),
    ).toEqual({ transferId: 't-1', meta, chunkCount: 1, totalBytes: 4000 });
  });

  it("chunkTensor's first chunk, for an empty tensor, one chunk and many, in every dtype", () => {
    const cases = [
      { dtype: DataType.FLOAT32, elements: 0 },
      { dtype: DataType.FLOAT16, elements: 3 },
      { dtype: DataType.BFLOAT16, elements: 1_000_000 },
      { dtype: DataType.FLOAT32, elements: 1_413_834 },
    ];
    for (const { dtype, elements } of cases) {
      const width = dtype === DataType.FLOAT32 ? 4 : 2;
      const meta = metaFor({ dtype, shape: [elements], elementCount: elements });
      const [first] = chunkTensor(meta, new Uint8Array(elements * width), MIN_CHUNK_BYTES);
      const header = checkTransferHeader(first!, { maxChunkBytes: MIN_CHUNK_BYTES });
      expect(header.totalBytes).toBe(elements * width);
      expect(header.chunkCount).toBe(Math.max(1, Math.ceil((elements * width) / MIN_CHUNK_BYTES)));
      expect(header.meta).toBe(meta);
    }
  });

  it('a scalar, and the largest and smallest chunk counts total_bytes allows', () => {
    const scalar = metaFor({ shape: [], elementCount: 1 });
    expect(checkTransferHeader(headerOf({ meta: scalar, totalBytes: 4 })).totalBytes).toBe(4);
    // 4,000 bytes: 1 chunk of 4,000 up to 4,000 chunks of 1 byte.
    expect(checkTransferHeader(headerOf({ chunkCount: 4000 })).chunkCount).toBe(4000);
    expect(
      checkTransferHeader(headerOf({ chunkCount: 4 }), { maxChunkBytes: 1000 }).chunkCount,
    ).toBe(4);
  });
});

describe('checkTransferHeader refuses', () => {
  it('an empty transfer id', () => {
    const error = rejectionOf(headerOf({ transferId: '' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'A tensor chunk has no transfer id: expected a non-empty transfer_id on every chunk. ' +
        'Fix the sender (chunkTensor sets one).',
    );
  });

  it('a chunk other than chunk 0', () => {
    const error = rejectionOf(headerOf({ chunkIndex: 2, chunkCount: 3 }));
    expect(error.code).toBe('DATA_CORRUPT');
    expect(error.message).toBe(
      'The tensor transfer t-1 is missing its start: expected chunk 0 of a new transfer, found ' +
        `chunk 2 of 3. ${RESEND}`,
    );
    expect(error.details).toEqual({ label: 'tensor', transferId: 't-1', expected: 0, found: 2 });
  });

  it('a first chunk without metadata', () => {
    const error = rejectionOf(headerOf({ meta: undefined }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'The first chunk of the tensor transfer t-1 has no TensorMeta: expected dtype, shape and ' +
        'element count on chunk 0, found none. The sender must set meta on chunk 0 (chunkTensor does).',
    );
  });

  it('a chunk count under 1', () => {
    const error = rejectionOf(headerOf({ chunkCount: 0 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'The tensor transfer t-1 says it has 0 chunks: expected at least 1 ' +
        "(an empty tensor is one empty chunk). Fix the sender's chunk_count.",
    );
  });

  it('total_bytes over maxTensorBytes (default 256 MiB), whatever else is wrong', () => {
    const error = rejectionOf(headerOf(), { maxTensorBytes: 3999, label: 'weights' });
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'The weights transfer t-1 is too large: expected at most 3,999 bytes, found total_bytes ' +
        '4,000. Send a smaller tensor, or raise maxTensorBytes if this size is legitimate.',
    );
    expect(error.details).toEqual({
      label: 'weights',
      transferId: 't-1',
      limit: 3999,
      found: 4000,
    });
    // The size limit comes before the metadata checks: a huge total is refused as too large.
    const huge = rejectionOf(
      headerOf({ totalBytes: 2 ** 32, meta: metaFor({ dtype: DataType.UNSPECIFIED }) }),
    );
    expect(huge.message).toContain(
      'expected at most 268,435,456 bytes, found total_bytes 4,294,967,296',
    );
  });

  it('a dtype this receiver cannot decode', () => {
    const error = rejectionOf(headerOf({ meta: metaFor({ dtype: DataType.UNSPECIFIED }) }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'The tensor transfer t-1 has an unsupported dtype: expected float32, float16 or bfloat16, ' +
        'found unspecified. The sender is newer than this receiver or broken: run the same ' +
        'Shardline release everywhere.',
    );
  });

  it('a dtype outside expectedDtypes', () => {
    const error = rejectionOf(headerOf(), {
      expectedDtypes: [DataType.FLOAT16, DataType.BFLOAT16],
    });
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      'The tensor transfer t-1 has the wrong dtype: expected float16 or bfloat16, found float32. ' +
        "The sender must encode tensors in the job's dtype.",
    );
  });

  it('a shape that disagrees with the element count', () => {
    const error = rejectionOf(headerOf({ meta: metaFor({ shape: [10, 99] }) }));
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      'The tensor transfer t-1 has inconsistent metadata: shape [10, 99] holds 990 elements, ' +
        'element_count says 1,000. The sender must set element_count to the product of the shape.',
    );
  });

  it('an element count and dtype that disagree with total_bytes', () => {
    const error = rejectionOf(headerOf({ meta: metaFor({ dtype: DataType.FLOAT16 }) }));
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      'The tensor transfer t-1 has inconsistent sizes: 1,000 float16 elements need 2,000 bytes, ' +
        'total_bytes says 4,000. The sender encoded the payload with another dtype than it ' +
        'declared, or miscounted.',
    );
    expect(error.details).toEqual({
      label: 'tensor',
      transferId: 't-1',
      expected: 2000,
      found: 4000,
    });
  });

  it('an element count other than expectedElementCount', () => {
    const error = rejectionOf(headerOf(), { expectedElementCount: 1_413_834 });
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      'The tensor transfer t-1 has the wrong size: expected 1,413,834 elements, found 1,000. ' +
        'Make sure every process builds the same model.',
    );
  });

  it('a layout fingerprint other than expectedFingerprint, or none', () => {
    const other = rejectionOf(headerOf(), { expectedFingerprint: 'fedcba9876543210' });
    expect(other.code).toBe('MISMATCH');
    expect(other.message).toBe(
      'The tensor transfer t-1 was made for a different model: expected layout fingerprint ' +
        `fedcba9876543210, found ${FINGERPRINT}. Make sure every process builds the same model ` +
        'with the same hyperparameters.',
    );
    const none = rejectionOf(headerOf({ meta: metaFor({ layoutFingerprint: '' }) }), {
      expectedFingerprint: FINGERPRINT,
    });
    expect(none.message).toContain('found (none).');
  });

  it('more chunks than bytes, or fewer than maxChunkBytes allows (default 4 MiB)', () => {
    const many = rejectionOf(headerOf({ chunkCount: 4001 }));
    expect(many.code).toBe('INVALID_ARGUMENT');
    expect(many.message).toBe(
      'The tensor transfer t-1 cannot be cut into 4,001 chunks: 4,000 bytes in non-empty chunks ' +
        'of at most 4,194,304 bytes need 1 to 4,000. Fix the sender, or raise maxChunkBytes if ' +
        'its chunk size is legitimate.',
    );
    expect(many.details).toEqual({
      label: 'tensor',
      transferId: 't-1',
      chunkCount: 4001,
      minChunks: 1,
      maxChunks: 4000,
    });
    const few = rejectionOf(headerOf({ chunkCount: 3 }), { maxChunkBytes: 1000 });
    expect(few.message).toContain('non-empty chunks of at most 1,000 bytes need 4 to 4,000.');
    const empty = rejectionOf(
      headerOf({ chunkCount: 2, totalBytes: 0, meta: metaFor({ shape: [0], elementCount: 0 }) }),
    );
    expect(empty.message).toContain(
      '0 bytes in non-empty chunks of at most 4,194,304 bytes need 1 to 1.',
    );
  });
});
