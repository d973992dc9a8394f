/**
 * Chunked tensor transfer: {@link chunkTensor} cuts a tensor's payload into TensorChunk
 * messages, {@link createTensorAssembler} checks and reassembles them on the other side.
 *
 * Why chunks: grpc-js refuses messages over 4 MiB by default, and a single large message is
 * buffered whole (and copied several times) on both sides before anyone sees a byte of it.
 * Chunks of 1 MiB cross any default limit, interleave with heartbeats, and let the receiver
 * copy each piece straight into the final buffer.
 *
 * The rules, checked by the assembler (see proto/shardline/v1/tensor.proto):
 * - chunks of one transfer arrive in index order, none missing or repeated, nothing in between;
 * - chunk 0 carries the TensorMeta; later chunks either leave it out or repeat it unchanged;
 * - byte_offset is the sum of the earlier chunks' sizes, every chunk but an empty tensor's is
 *   non-empty, and the sizes add up to total_bytes = element_count * dtype size;
 * - element_count is the product of shape;
 * - the last chunk carries the CRC-32 of the whole payload.
 */

import { crc32 } from '@shardline/core/crc32';
import { formatCount, ShardlineError, type ShardlineErrorCode } from '@shardline/core/errors';
import { bytesPerElement, dtypeName } from './codecs.js';
import type { DataType, TensorChunk, TensorMeta } from './gen/shardline/v1/tensor.js';

/** Default size of a chunk's data: 1 MiB, well under grpc-js's default 4 MiB message limit. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** Smallest chunk size allowed: below it per-message overhead dominates. */
export const MIN_CHUNK_BYTES = 256 * 1024;
/**
 * Largest chunk size allowed. A 4 MiB chunk plus its header exceeds grpc-js's default 4 MiB
 * receive limit: peers using it must raise `grpc.max_receive_message_length`, as the presets in
 * options.ts do.
 */
export const MAX_CHUNK_BYTES = 4 * 1024 * 1024;
/**
 * Default largest payload an assembler accepts: 256 MiB (64 million float32 values, 45 times
 * the seed CNN). Receivers that know the model should pass the exact size instead.
 */
export const DEFAULT_MAX_TENSOR_BYTES = 256 * 1024 * 1024;

/** Checks a chunk size against the protocol's range; throws `INVALID_ARGUMENT` outside it. */
export function assertChunkBytes(maxChunkBytes: number): void {
  if (
    !Number.isInteger(maxChunkBytes) ||
    maxChunkBytes < MIN_CHUNK_BYTES ||
    maxChunkBytes > MAX_CHUNK_BYTES
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Chunk size out of range: expected a whole number of bytes from ${formatCount(MIN_CHUNK_BYTES)} ` +
        `to ${formatCount(MAX_CHUNK_BYTES)}, found ${maxChunkBytes}. Use the default ` +
        `${formatCount(DEFAULT_CHUNK_BYTES)} unless measurements say otherwise.`,
      { details: { maxChunkBytes } },
    );
  }
}

/** The element count a shape implies (1 for a scalar), or NaN when a dimension is invalid. */
export function elementCountOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) return Number.NaN;
    n *= d;
  }
  return n;
}

/**
 * Checks that a tensor's metadata is consistent (element count equals the product of shape,
 * known dtype) and returns its payload size in bytes. Throws `MISMATCH` or `INVALID_ARGUMENT`.
 */
export function payloadBytesOf(meta: TensorMeta, what = 'tensor'): number {
  const width = bytesPerElement(meta.dtype);
  const fromShape = elementCountOf(meta.shape);
  if (fromShape !== meta.elementCount) {
    throw new ShardlineError(
      'MISMATCH',
      `The ${what}'s metadata disagrees with itself: shape [${meta.shape.join(', ')}] holds ` +
        `${formatCount(fromShape)} elements, element_count says ${formatCount(meta.elementCount)}. ` +
        'The sender must set element_count to the product of the shape.',
      { details: { shape: meta.shape, elementCount: meta.elementCount } },
    );
  }
  return meta.elementCount * width;
}

let transferCounter = 0;
const transferPrefix = Math.floor(Math.random() * 0xffffffff)
  .toString(36)
  .padStart(7, '0');

/** A transfer id unique within this process (and very likely across processes): "k3x9a1b-17". */
export function nextTransferId(): string {
  transferCounter += 1;
  return `${transferPrefix}-${transferCounter}`;
}

/** Options of {@link chunkTensor}. */
export interface ChunkTensorOptions {
  /** The transfer id; a fresh {@link nextTransferId} by default. */
  transferId?: string;
}

/**
 * Cuts a tensor's payload into TensorChunk messages of at most `maxChunkBytes` data each. The
 * chunks' `data` are views of `bytes` (no copy), so leave `bytes` untouched until they are sent.
 * The CRC-32 is computed as the chunks are pulled, so it costs nothing up front.
 *
 * Throws `INVALID_ARGUMENT` for a chunk size outside 256 KiB to 4 MiB or an unsupported dtype,
 * and `MISMATCH` when `bytes`, `meta.elementCount`, `meta.shape` and `meta.dtype` disagree.
 *
 * @example
 * ```ts
 * const meta = { dtype: DataType.FLOAT32, shape: [values.length], elementCount: values.length,
 *   layoutFingerprint: layout.fingerprint, version: 7n, step: 7n };
 * for (const chunk of chunkTensor(meta, encodeTensor(values))) {
 *   call.write({ kind: { $case: 'weights', value: { chunk } } });
 * }
 * ```
 */
export function* chunkTensor(
  meta: TensorMeta,
  bytes: Uint8Array,
  maxChunkBytes: number = DEFAULT_CHUNK_BYTES,
  options: ChunkTensorOptions = {},
): Generator<TensorChunk, void, undefined> {
  assertChunkBytes(maxChunkBytes);
  const totalBytes = payloadBytesOf(meta);
  if (bytes.byteLength !== totalBytes) {
    throw new ShardlineError(
      'MISMATCH',
      `Tensor payload has the wrong size: ${formatCount(meta.elementCount)} ${dtypeName(meta.dtype)} ` +
        `elements need ${formatCount(totalBytes)} bytes, found ${formatCount(bytes.byteLength)}. ` +
        'Encode the values with encodeTensor(values, meta.dtype).',
      { details: { expected: totalBytes, found: bytes.byteLength } },
    );
  }
  const transferId = options.transferId ?? nextTransferId();
  if (transferId === '') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'Empty transfer id: expected a non-empty string. Leave transferId out to get a fresh one.',
    );
  }
  const chunkCount = Math.max(1, Math.ceil(totalBytes / maxChunkBytes));
  let crc = 0;
  for (let index = 0; index < chunkCount; index++) {
    const offset = index * maxChunkBytes;
    const length = Math.min(maxChunkBytes, totalBytes - offset);
    // A Buffer view over the caller's memory: the generated encoder copies it into the message.
    const data = Buffer.from(bytes.buffer, bytes.byteOffset + offset, length);
    crc = crc32(data, crc);
    const last = index === chunkCount - 1;
    yield {
      transferId,
      chunkIndex: index,
      chunkCount,
      byteOffset: offset,
      totalBytes,
      meta: index === 0 ? meta : undefined,
      data,
      payloadCrc32: last ? crc : 0,
    };
  }
}

/** Limits and expectations of a {@link createTensorAssembler}. */
export interface TensorAssemblerOptions {
  /**
   * The largest payload accepted, in bytes, checked on the first chunk before any memory is
   * allocated. Default {@link DEFAULT_MAX_TENSOR_BYTES}; pass the model's exact size.
   */
  maxTensorBytes?: number;
  /** The largest `data` accepted in one chunk. Default {@link MAX_CHUNK_BYTES}. */
  maxChunkBytes?: number;
  /** Refuse tensors whose layout fingerprint differs from this one. */
  expectedFingerprint?: string;
  /** Refuse tensors with another element count (the model's parameter count). */
  expectedElementCount?: number;
  /** Refuse tensors in other dtypes (for example only the job's gradient dtype). */
  expectedDtypes?: readonly DataType[];
  /** What is being received, for error messages: "gradient from worker w-3". */
  label?: string;
  /**
   * Reuse one payload buffer for every transfer of the same size instead of allocating a fresh
   * one each time. Fresh multi-megabyte buffers are not free: the kernel maps and zeroes every
   * page on first touch, about 2 ms for the seed CNN's 5.6 MB here, as much as the copy and
   * checksum together. With reuse, a returned tensor's `bytes` are overwritten by the next
   * transfer: use them (decode, accumulate, apply) or copy them before pushing its next chunk.
   * Default false.
   */
  reuseBuffer?: boolean;
}

/** A tensor reassembled from its chunks. */
export interface AssembledTensor {
  /** The transfer id its chunks carried. */
  transferId: string;
  /** The metadata from chunk 0. */
  meta: TensorMeta;
  /**
   * The whole payload, in fresh memory owned by the caller (aligned: `decodeTensor` views it
   * without copying).
   */
  bytes: Uint8Array;
}

/** Reassembles chunked tensors, one transfer at a time; see {@link createTensorAssembler}. */
export interface TensorAssembler {
  /**
   * Takes the next chunk. Returns the tensor when this chunk completes it, otherwise undefined.
   * Throws a {@link ShardlineError} when the chunk breaks a rule; the transfer in progress is
   * then discarded and the next chunk must start a new transfer.
   */
  push(chunk: TensorChunk): AssembledTensor | undefined;
  /** True while a transfer has started but not completed. */
  readonly pending: boolean;
  /**
   * Call when the stream ends. Throws `DATA_CORRUPT` when it ended in the middle of a transfer,
   * which would otherwise go unnoticed.
   */
  end(): void;
  /** Discards any transfer in progress (for example when the stream is restarted). */
  reset(): void;
}

/** The fields of a transfer's first chunk that {@link checkTransferHeader} reads. */
export type TransferHeaderChunk = Pick<
  TensorChunk,
  'transferId' | 'chunkIndex' | 'chunkCount' | 'totalBytes' | 'meta'
>;

/** What {@link checkTransferHeader} found valid in a transfer's first chunk. */
export interface TransferHeader {
  /** The transfer id, not empty. */
  transferId: string;
  /** The metadata: consistent with itself and with the assembler's expectations. */
  meta: TensorMeta;
  /** How many chunks the transfer has: possible for `totalBytes` and the chunk size limit. */
  chunkCount: number;
  /** The payload size in bytes: element count times the dtype's width, within the size limit. */
  totalBytes: number;
}

/** Said after every refusal that discards a transfer in progress. */
const RESEND = 'The transfer was discarded: the sender must send the tensor again, in order.';

/** A refusal of the transfer `label` names: every detail object carries the label. */
function transferError(
  code: ShardlineErrorCode,
  label: string,
  message: string,
  details: Record<string, unknown>,
): ShardlineError {
  return new ShardlineError(code, message, { details: { label, ...details } });
}

/**
 * Checks a transfer's first chunk (its header fields and TensorMeta) against the limits and
 * expectations of a {@link createTensorAssembler} with the same options, before any payload
 * memory is allocated, and returns the facts it checked. Pure: it reads nothing but its
 * arguments. The assembler runs it on every chunk 0; other receivers can run it to refuse a
 * transfer early.
 *
 * Throws a {@link ShardlineError}, in this order of checks: `INVALID_ARGUMENT` for an empty
 * transfer id; `DATA_CORRUPT` when the chunk is not chunk 0; `INVALID_ARGUMENT` for missing
 * metadata, a chunk count under 1, `total_bytes` over `maxTensorBytes` or an unsupported dtype;
 * `MISMATCH` for a dtype outside `expectedDtypes`, a shape that disagrees with the element count,
 * an element count that disagrees with `total_bytes`, an element count other than
 * `expectedElementCount` or a fingerprint other than `expectedFingerprint`; `INVALID_ARGUMENT`
 * for a chunk count that `total_bytes` cannot be cut into with chunks of at most
 * `maxChunkBytes`.
 *
 * @example
 * ```ts
 * const header = checkTransferHeader(firstChunk, {
 *   maxTensorBytes: layout.size * 4,
 *   expectedFingerprint: layout.fingerprint,
 *   label: 'weights',
 * });
 * console.log(`${header.totalBytes} bytes in ${header.chunkCount} chunks`);
 * ```
 */
export function checkTransferHeader(
  header: TransferHeaderChunk,
  options: TensorAssemblerOptions = {},
): TransferHeader {
  const label = options.label ?? 'tensor';
  requireTransferId(header.transferId, label);
  const meta = requireStart(header, label);
  // Every size check happens here, before the payload buffer is allocated: a hostile or
  // buggy total_bytes must not make us reserve gigabytes.
  checkSizeLimit(header, options.maxTensorBytes ?? DEFAULT_MAX_TENSOR_BYTES, label);
  checkMeta(header, meta, options, label);
  checkChunkCount(header, options.maxChunkBytes ?? MAX_CHUNK_BYTES, label);
  return {
    transferId: header.transferId,
    meta,
    chunkCount: header.chunkCount,
    totalBytes: header.totalBytes,
  };
}

function requireTransferId(transferId: string, label: string): void {
  if (transferId === '') {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `A ${label} chunk has no transfer id: expected a non-empty transfer_id on every chunk. ` +
        'Fix the sender (chunkTensor sets one).',
      {},
    );
  }
}

/** Chunk 0 with metadata and a chunk count: what every transfer must start with. */
function requireStart(header: TransferHeaderChunk, label: string): TensorMeta {
  const id = header.transferId;
  if (header.chunkIndex !== 0) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${id} is missing its start: expected chunk 0 of a new transfer, found ` +
        `chunk ${header.chunkIndex} of ${header.chunkCount}. ${RESEND}`,
      { transferId: id, expected: 0, found: header.chunkIndex },
    );
  }
  const meta = header.meta;
  if (meta === undefined) {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `The first chunk of the ${label} transfer ${id} has no TensorMeta: expected dtype, shape and ` +
        `element count on chunk 0, found none. The sender must set meta on chunk 0 (chunkTensor does).`,
      { transferId: id },
    );
  }
  if (header.chunkCount < 1) {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `The ${label} transfer ${id} says it has ${header.chunkCount} chunks: expected at least 1 ` +
        `(an empty tensor is one empty chunk). Fix the sender's chunk_count.`,
      { transferId: id, chunkCount: header.chunkCount },
    );
  }
  return meta;
}

function checkSizeLimit(header: TransferHeaderChunk, maxTensorBytes: number, label: string): void {
  if (header.totalBytes > maxTensorBytes) {
    const id = header.transferId;
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `The ${label} transfer ${id} is too large: expected at most ${formatCount(maxTensorBytes)} ` +
        `bytes, found total_bytes ${formatCount(header.totalBytes)}. Send a smaller tensor, or raise ` +
        'maxTensorBytes if this size is legitimate.',
      { transferId: id, limit: maxTensorBytes, found: header.totalBytes },
    );
  }
}

/** The dtype, shape, element count and fingerprint: consistent, and as the options expect. */
function checkMeta(
  header: TransferHeaderChunk,
  meta: TensorMeta,
  options: TensorAssemblerOptions,
  label: string,
): void {
  const id = header.transferId;
  const width = checkDtype(id, meta, options.expectedDtypes, label);
  const fromShape = elementCountOf(meta.shape);
  if (fromShape !== meta.elementCount) {
    throw transferError(
      'MISMATCH',
      label,
      `The ${label} transfer ${id} has inconsistent metadata: shape [${meta.shape.join(', ')}] ` +
        `holds ${formatCount(fromShape)} elements, element_count says ${formatCount(meta.elementCount)}. ` +
        'The sender must set element_count to the product of the shape.',
      { transferId: id, shape: meta.shape, elementCount: meta.elementCount },
    );
  }
  if (meta.elementCount * width !== header.totalBytes) {
    throw transferError(
      'MISMATCH',
      label,
      `The ${label} transfer ${id} has inconsistent sizes: ${formatCount(meta.elementCount)} ` +
        `${dtypeName(meta.dtype)} elements need ${formatCount(meta.elementCount * width)} bytes, ` +
        `total_bytes says ${formatCount(header.totalBytes)}. The sender encoded the payload with ` +
        'another dtype than it declared, or miscounted.',
      { transferId: id, expected: meta.elementCount * width, found: header.totalBytes },
    );
  }
  if (
    options.expectedElementCount !== undefined &&
    meta.elementCount !== options.expectedElementCount
  ) {
    throw transferError(
      'MISMATCH',
      label,
      `The ${label} transfer ${id} has the wrong size: expected ${formatCount(options.expectedElementCount)} ` +
        `elements, found ${formatCount(meta.elementCount)}. Make sure every process builds the same model.`,
      { transferId: id, expected: options.expectedElementCount, found: meta.elementCount },
    );
  }
  if (
    options.expectedFingerprint !== undefined &&
    meta.layoutFingerprint !== options.expectedFingerprint
  ) {
    throw transferError(
      'MISMATCH',
      label,
      `The ${label} transfer ${id} was made for a different model: expected layout fingerprint ` +
        `${options.expectedFingerprint}, found ${meta.layoutFingerprint || '(none)'}. Make sure every ` +
        'process builds the same model with the same hyperparameters.',
      { transferId: id, expected: options.expectedFingerprint, found: meta.layoutFingerprint },
    );
  }
}

/** A dtype this receiver decodes and the options allow; returns its width in bytes. */
function checkDtype(
  id: string,
  meta: TensorMeta,
  expectedDtypes: readonly DataType[] | undefined,
  label: string,
): number {
  let width: number;
  try {
    width = bytesPerElement(meta.dtype);
  } catch {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `The ${label} transfer ${id} has an unsupported dtype: expected float32, float16 or bfloat16, ` +
        `found ${dtypeName(meta.dtype)}. The sender is newer than this receiver or broken: run the ` +
        'same Shardline release everywhere.',
      { transferId: id, found: meta.dtype },
    );
  }
  if (expectedDtypes && !expectedDtypes.includes(meta.dtype)) {
    throw transferError(
      'MISMATCH',
      label,
      `The ${label} transfer ${id} has the wrong dtype: expected ` +
        `${expectedDtypes.map(dtypeName).join(' or ')}, found ${dtypeName(meta.dtype)}. ` +
        "The sender must encode tensors in the job's dtype.",
      { transferId: id, found: meta.dtype },
    );
  }
  return width;
}

/** A chunk count that total_bytes can be cut into, in non-empty chunks of at most maxChunkBytes. */
function checkChunkCount(header: TransferHeaderChunk, maxChunkBytes: number, label: string): void {
  const { transferId: id, chunkCount, totalBytes } = header;
  const minChunks = totalBytes === 0 ? 1 : Math.ceil(totalBytes / maxChunkBytes);
  const maxChunks = Math.max(1, totalBytes);
  if (chunkCount < minChunks || chunkCount > maxChunks) {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `The ${label} transfer ${id} cannot be cut into ${formatCount(chunkCount)} chunks: ` +
        `${formatCount(totalBytes)} bytes in non-empty chunks of at most ` +
        `${formatCount(maxChunkBytes)} bytes need ${formatCount(minChunks)} to ${formatCount(maxChunks)}. ` +
        'Fix the sender, or raise maxChunkBytes if its chunk size is legitimate.',
      { transferId: id, chunkCount, minChunks, maxChunks },
    );
  }
}

/** A transfer in progress. */
interface Transfer {
  id: string;
  meta: TensorMeta;
  count: number;
  total: number;
  next: number;
  received: number;
  crc: number;
  bytes: Uint8Array;
}

/** A chunk that continues the transfer in progress: its transfer id and nothing else. */
function checkSameTransfer(t: Transfer, chunk: TensorChunk, label: string): void {
  requireTransferId(chunk.transferId, label);
  if (chunk.transferId !== t.id) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${t.id} was cut short: expected chunk ${t.next} of ${t.count}, found ` +
        `chunk ${chunk.chunkIndex} of another transfer (${chunk.transferId}). Chunks ${t.next} to ` +
        `${t.count - 1} are missing. ${RESEND}`,
      { transferId: t.id, expected: t.next, found: chunk.chunkIndex, other: chunk.transferId },
    );
  }
}

/** The chunk's place in the transfer: the next index, the same header, the next byte offset. */
function checkPlacement(t: Transfer, chunk: TensorChunk, label: string): void {
  const index = chunk.chunkIndex;
  if (index !== t.next) {
    const what =
      index < t.next
        ? `chunk ${index} again (a duplicate, or chunks out of order)`
        : `chunk ${index}: chunk${index - t.next > 1 ? `s ${t.next} to ${index - 1} are` : ` ${t.next} is`} missing`;
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${t.id} is out of order: expected chunk ${t.next} of ${t.count}, found ${what}. ${RESEND}`,
      { transferId: t.id, expected: t.next, found: index },
    );
  }
  if (chunk.chunkCount !== t.count || chunk.totalBytes !== t.total) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `Chunk ${index} of the ${label} transfer ${t.id} disagrees with chunk 0: expected ${t.count} ` +
        `chunks and ${formatCount(t.total)} bytes, found ${chunk.chunkCount} chunks and ` +
        `${formatCount(chunk.totalBytes)} bytes. Two transfers were mixed up. ${RESEND}`,
      { transferId: t.id, index },
    );
  }
  if (index > 0 && chunk.meta !== undefined && !sameMeta(chunk.meta, t.meta)) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `Chunk ${index} of the ${label} transfer ${t.id} carries other metadata than chunk 0 ` +
        `(dtype, shape, fingerprint, version or step differ). Two transfers were mixed up. ${RESEND}`,
      { transferId: t.id, index },
    );
  }
  if (chunk.byteOffset !== t.received) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `Chunk ${index} of the ${label} transfer ${t.id} is at the wrong offset: expected byte ` +
        `${formatCount(t.received)} (the size of the chunks before it), found ${formatCount(chunk.byteOffset)}. ${RESEND}`,
      { transferId: t.id, index, expected: t.received, found: chunk.byteOffset },
    );
  }
}

function sameMeta(a: TensorMeta, b: TensorMeta): boolean {
  return (
    a.dtype === b.dtype &&
    a.elementCount === b.elementCount &&
    a.layoutFingerprint === b.layoutFingerprint &&
    a.version === b.version &&
    a.step === b.step &&
    a.shape.length === b.shape.length &&
    a.shape.every((d, i) => d === b.shape[i])
  );
}

/** The chunk's data: within the chunk size limit, not empty, not past total_bytes. */
function checkData(t: Transfer, chunk: TensorChunk, maxChunkBytes: number, label: string): void {
  const index = chunk.chunkIndex;
  const size = chunk.data.byteLength;
  if (size > maxChunkBytes) {
    throw transferError(
      'INVALID_ARGUMENT',
      label,
      `Chunk ${index} of the ${label} transfer ${t.id} is too large: expected at most ` +
        `${formatCount(maxChunkBytes)} bytes, found ${formatCount(size)}. The sender must use the job's chunk size.`,
      { transferId: t.id, index, limit: maxChunkBytes, found: size },
    );
  }
  if (size === 0 && t.total > 0) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `Chunk ${index} of the ${label} transfer ${t.id} is empty: expected data, as only an empty ` +
        `tensor travels in an empty chunk. ${RESEND}`,
      { transferId: t.id, index },
    );
  }
  if (t.received + size > t.total) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${t.id} overflows: chunk ${index} ends at byte ` +
        `${formatCount(t.received + size)}, expected at most total_bytes ${formatCount(t.total)}. ${RESEND}`,
      { transferId: t.id, index, expected: t.total, found: t.received + size },
    );
  }
}

/** A transfer whose last chunk arrived: every byte received, the checksum right. */
function checkComplete(t: Transfer, last: TensorChunk, label: string): void {
  if (t.received !== t.total) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${t.id} is truncated: expected ${formatCount(t.total)} bytes over ` +
        `${t.count} chunks, found ${formatCount(t.received)}. ${RESEND}`,
      { transferId: t.id, expected: t.total, found: t.received },
    );
  }
  if (last.payloadCrc32 >>> 0 !== t.crc) {
    throw transferError(
      'DATA_CORRUPT',
      label,
      `The ${label} transfer ${t.id} fails its checksum: expected CRC-32 ${hex(last.payloadCrc32)} ` +
        `(from the last chunk), computed ${hex(t.crc)} over the ${formatCount(t.total)} bytes received. ` +
        `The payload was damaged or reassembled wrongly. ${RESEND}`,
      { transferId: t.id, expected: last.payloadCrc32 >>> 0, found: t.crc },
    );
  }
}

function streamEndedError(t: Transfer, label: string): ShardlineError {
  return transferError(
    'DATA_CORRUPT',
    label,
    `The stream ended in the middle of the ${label} transfer ${t.id}: expected ${t.count} chunks ` +
      `(${formatCount(t.total)} bytes), received ${t.next} (${formatCount(t.received)} bytes). ${RESEND}`,
    { transferId: t.id, expected: t.count, found: t.next },
  );
}

/**
 * Creates a {@link TensorAssembler}: it accepts the chunks of one transfer after another, in
 * order, checks each against the rules of the wire format and returns the tensor when the last
 * chunk arrives. Failures are {@link ShardlineError}s saying what was expected and found:
 * `DATA_CORRUPT` for chunks out of order, duplicated or missing, wrong offsets, byte totals that
 * do not add up, fields that change mid-transfer and checksum mismatches; `MISMATCH` for
 * metadata that disagrees with itself (shape, element count, dtype, byte total) or with the
 * expectations given; `INVALID_ARGUMENT` for malformed chunks and sizes over the limits. Chunk 0
 * is checked by {@link checkTransferHeader}.
 *
 * @example
 * ```ts
 * const assembler = createTensorAssembler({ maxTensorBytes: layout.size * 4,
 *   expectedFingerprint: layout.fingerprint, label: 'weights' });
 * call.on('data', (message) => {
 *   if (message.kind?.$case !== 'weights') return;
 *   const tensor = assembler.push(message.kind.value.chunk!);
 *   if (tensor) applyWeights(decodeTensor(tensor.bytes, tensor.meta.dtype));
 * });
 * ```
 */
export function createTensorAssembler(options: TensorAssemblerOptions = {}): TensorAssembler {
  const maxChunkBytes = options.maxChunkBytes ?? MAX_CHUNK_BYTES;
  const label = options.label ?? 'tensor';
  let current: Transfer | undefined;
  let spare: Uint8Array | undefined; // the last payload buffer, when reuseBuffer is set

  function start(chunk: TensorChunk): Transfer {
    const header = checkTransferHeader(chunk, options);
    return {
      id: header.transferId,
      meta: header.meta,
      count: header.chunkCount,
      total: header.totalBytes,
      next: 0,
      received: 0,
      crc: 0,
      bytes:
        spare !== undefined && spare.byteLength === header.totalBytes
          ? spare
          : new Uint8Array(header.totalBytes),
    };
  }

  function accept(chunk: TensorChunk): AssembledTensor | undefined {
    if (current !== undefined) checkSameTransfer(current, chunk, label);
    const t = current ?? start(chunk);
    checkPlacement(t, chunk, label);
    checkData(t, chunk, maxChunkBytes, label);
    t.bytes.set(chunk.data, t.received);
    t.crc = crc32(chunk.data, t.crc);
    t.received += chunk.data.byteLength;
    t.next += 1;
    current = t;
    if (t.next < t.count) return undefined;

    current = undefined;
    checkComplete(t, chunk, label);
    if (options.reuseBuffer) spare = t.bytes;
    return { transferId: t.id, meta: t.meta, bytes: t.bytes };
  }

  return {
    push(chunk) {
      try {
        return accept(chunk);
      } catch (error) {
        current = undefined; // a broken transfer is never resumed
        throw error;
      }
    },
    get pending() {
      return current !== undefined;
    },
    end() {
      if (current === undefined) return;
      const t = current;
      current = undefined;
      throw streamEndedError(t, label);
    },
    reset() {
      current = undefined;
    },
  };
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
