/**
 * FetchDataset, the coordinator's side: streams the job's decoded image-folder dataset (the
 * `SLIMGFLD` cache file of @shardline/datasets) to a joined worker that has no copy, from the
 * byte offset it asks for, so a transfer broken halfway resumes instead of starting over.
 *
 * The file is read one chunk at a time and the next chunk is read only when gRPC takes the
 * previous one (`write` returning false waits for 'drain'), so a slow worker costs the
 * coordinator a few chunks of memory, not the whole file. Each chunk carries its own CRC-32; the
 * file's SHA-256 trailer lets the worker check the whole once it is complete.
 */
import { once } from 'node:events';
import { type FileHandle, open } from 'node:fs/promises';
import { type ServerWritableStream, status } from '@grpc/grpc-js';
import { formatCount, type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  crc32,
  type FetchDatasetRequest,
  type FetchDatasetResponse,
  toGrpcStatus,
} from '@shardline/protocol';

/** The dataset file FetchDataset sends: the job's decoded image-folder cache file. */
export interface DatasetFile {
  /** Where the cache file is on the coordinator's machine. */
  path: string;
  /** ImageFolderDataset.fingerprint: a request naming another is refused. */
  fingerprint: string;
  /** Its size when the job started (ImageFolderDataset.cache_bytes). */
  size: number;
}

/** Options of {@link serveDatasetFile}. */
export interface ServeDatasetFileOptions {
  /** The job's dataset file; undefined when the job has none to send (a built-in dataset). */
  file: DatasetFile | undefined;
  /** Whether a worker id came from a Join this coordinator still knows. */
  isJoined(workerId: string): boolean;
  /** The most data bytes in one response (JobSpec.max_chunk_bytes). */
  maxChunkBytes: number;
  logger: Logger;
}

/**
 * The FetchDataset handler: checks the request, then streams `file` from the requested offset
 * in chunks of at most `maxChunkBytes`, each with its offset, the file's size and its CRC-32,
 * and ends the call with OK. It refuses an unknown worker id (NOT_FOUND), a job without a file
 * to send or another fingerprint (FAILED_PRECONDITION) and an offset past the end
 * (OUT_OF_RANGE). A file whose size changed since the job started ends the call with DATA_LOSS
 * rather than a short stream, and one that can no longer be opened with INTERNAL. A cancelled
 * call (the worker went away) stops at the next chunk. Every outcome is sent as the call's
 * status, so the returned promise never rejects; the file is closed in every case.
 *
 * @example
 * ```ts
 * fetchDataset: (call) =>
 *   void serveDatasetFile(call, { file, isJoined: (id) => joined.has(id), maxChunkBytes, logger }),
 * ```
 */
export async function serveDatasetFile(
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
  options: ServeDatasetFileOptions,
): Promise<void> {
  const { logger } = options;
  // 'cancelled' comes once, when the client cancels or its connection drops. grpc-js then drops
  // every later write without calling back, so 'drain' never comes: the abort is what ends a
  // wait for it.
  const cancelled = new AbortController();
  const onCancelled = () => cancelled.abort();
  call.once('cancelled', onCancelled);
  let handle: FileHandle | undefined;
  try {
    const { file, start } = checkRequest(call.request, options);
    handle = await openDatasetFile(file);
    const sent = await streamFile(call, handle, file, start, options.maxChunkBytes, cancelled);
    if (cancelled.signal.aborted) {
      logger.debug('FetchDataset cancelled by the worker', {
        worker_id: call.request.workerId,
        sent_bytes: sent,
      });
      return;
    }
    call.end();
    logger.debug('FetchDataset sent', {
      worker_id: call.request.workerId,
      from: start,
      sent_bytes: sent,
    });
  } catch (error) {
    const e = toShardlineError(error);
    if (cancelled.signal.aborted) return; // nobody is listening for the status
    const fields = { worker_id: call.request.workerId, code: e.code, reason: e.message };
    // A refused request is the worker's business; a file that broke is the coordinator's.
    if (e.code === 'DATA_CORRUPT' || e.code === 'INTERNAL')
      logger.error('FetchDataset failed', fields);
    else logger.debug('FetchDataset refused', fields);
    // emit('error') ends the call with this status; destroy() would end it with none.
    call.emit('error', statusFor(e));
  } finally {
    call.off('cancelled', onCancelled);
    await handle?.close();
  }
}

/**
 * The status for an error: toGrpcStatus's, except where the error names a more exact gRPC code
 * in `details.grpcCode` (as fromGrpcStatus records the received one). An offset past the end
 * goes out as OUT_OF_RANGE, the code gRPC made for it, although no Shardline code maps there
 * (NUMERIC, which does, means NaN or Inf); its trailer still says INVALID_ARGUMENT, so a
 * Shardline worker reads the exact code back.
 */
function statusFor(error: ShardlineError): ReturnType<typeof toGrpcStatus> {
  const grpcStatus = toGrpcStatus(error);
  const { grpcCode } = error.details;
  if (typeof grpcCode === 'number') grpcStatus.code = grpcCode as status;
  return grpcStatus;
}

/** The refusals, in the order the proto lists them; returns the file and the first byte. */
function checkRequest(
  request: FetchDatasetRequest,
  options: ServeDatasetFileOptions,
): { file: DatasetFile; start: number } {
  const { file } = options;
  if (!options.isJoined(request.workerId)) {
    throw new ShardlineError(
      'NOT_FOUND',
      `Unknown worker id ${JSON.stringify(request.workerId.slice(0, 64))}: join first, then fetch the dataset with the worker id Join returned (a coordinator that restarted has forgotten earlier joins).`,
    );
  }
  if (!file) {
    throw new ShardlineError(
      'MISMATCH',
      'This coordinator has no image-folder dataset to send: the job trains on a built-in dataset, which every worker loads itself, or its decoded cache file could not be kept (JobSpec.dataset.cache_bytes is 0). ' +
        "Give the worker its own copy of the data instead: the job's dataset files, or the image folder at the path JobSpec.dataset.folder names.",
    );
  }
  if (request.fingerprint !== file.fingerprint) {
    throw new ShardlineError(
      'MISMATCH',
      `The requested dataset fingerprint ${JSON.stringify(request.fingerprint.slice(0, 128))} is not this job's: the coordinator sends ${file.fingerprint}. ` +
        'Ask for JobSpec.dataset.fingerprint from this job (a worker holding a spec from an earlier job must join again).',
    );
  }
  if (request.offset > BigInt(file.size)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Offset ${formatCount(request.offset)} is past the end of the dataset file, which has ${formatCount(file.size)} bytes. ` +
        'Resume from the size of the partial file, and start over from 0 if that is larger than the file.',
      { details: { grpcCode: status.OUT_OF_RANGE } },
    );
  }
  return { file, start: Number(request.offset) };
}

/**
 * Opens the file and checks it still has the size the job announced: the worker checks every
 * chunk against that size, so a file rewritten since must fail here, not halfway through.
 */
async function openDatasetFile(file: DatasetFile): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch (error) {
    // Not NOT_FOUND: to a worker that means "join again", which would not help.
    throw new ShardlineError(
      'INTERNAL',
      `The coordinator cannot open its dataset file ${file.path} (${(error as Error).message}). It was removed or became unreadable after the job started; restart the coordinator to decode the image folder again.`,
      { cause: error },
    );
  }
  try {
    const { size } = await handle.stat();
    if (size !== file.size) throw changedSize(file, size);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

function changedSize(file: DatasetFile, found: number): ShardlineError {
  return new ShardlineError(
    'DATA_CORRUPT',
    `The coordinator's dataset file ${file.path} changed while the job runs: expected ${formatCount(file.size)} bytes, found ${formatCount(found)}. ` +
      'Restart the coordinator so it decodes the image folder again, and keep other processes from writing to its cache folder.',
  );
}

/**
 * Sends the file from `start` to its end; returns the bytes sent. Stops early, without error,
 * when the call is cancelled.
 */
async function streamFile(
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
  handle: FileHandle,
  file: DatasetFile,
  start: number,
  maxChunkBytes: number,
  cancelled: AbortController,
): Promise<number> {
  if (!Number.isSafeInteger(maxChunkBytes) || maxChunkBytes <= 0) {
    throw new ShardlineError(
      'INTERNAL',
      `FetchDataset needs a positive whole chunk size, got ${maxChunkBytes}.`,
    );
  }
  const totalBytes = BigInt(file.size);
  let position = start;
  while (position < file.size && !cancelled.signal.aborted) {
    const length = Math.min(maxChunkBytes, file.size - position);
    // A fresh buffer per chunk: grpc-js may still hold the previous one in its write queue.
    const data = Buffer.allocUnsafe(length);
    await readFully(handle, data, position, file);
    const flowing = call.write({ offset: BigInt(position), data, totalBytes, crc32: crc32(data) });
    position += length;
    if (!flowing) await drained(call, cancelled.signal);
  }
  return position - start;
}

/** Fills `data` from `position`; a file that ends sooner was truncated under us. */
async function readFully(
  handle: FileHandle,
  data: Buffer,
  position: number,
  file: DatasetFile,
): Promise<void> {
  for (let filled = 0; filled < data.length; ) {
    const { bytesRead } = await handle.read(data, filled, data.length - filled, position + filled);
    if (bytesRead === 0) throw changedSize(file, position + filled);
    filled += bytesRead;
  }
}

/** Waits for 'drain', or for the call's cancellation, which means no 'drain' will come. */
async function drained(
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
  signal: AbortSignal,
): Promise<void> {
  try {
    await once(call, 'drain', { signal });
  } catch (error) {
    if (!signal.aborted) throw error;
  }
}
