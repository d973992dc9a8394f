/**
 * Writing many messages to a gRPC stream without flooding memory or waiting needlessly.
 */
import type { Writable } from 'node:stream';
import { ShardlineError } from '@shardline/core/errors';

/**
 * Writes `messages` to a grpc-js stream (a ClientDuplexStream, ServerDuplexStream or any
 * object-mode Writable) and resolves once all are handed to it. It keeps writing while the
 * stream accepts more (`write()` returns true until its buffer holds `writableHighWaterMark`
 * messages, 16 by default) and waits for `drain` only then, so several chunks are in flight at
 * once instead of one per round trip. Rejects with `CANCELLED` if the stream closes first, and
 * with the stream's error if it fails.
 *
 * Messages are pulled lazily, so a `chunkTensor` generator computes each chunk's checksum only
 * when the chunk is about to be written.
 *
 * @example
 * ```ts
 * await writeMessages(call, mapIterable(chunkTensor(meta, bytes), (chunk) => ({
 *   kind: { $case: 'gradient', value: { result: undefined, chunk } } })));
 * ```
 */
export async function writeMessages<T>(stream: Writable, messages: Iterable<T>): Promise<void> {
  for (const message of messages) {
    if (stream.destroyed || stream.writableEnded) {
      throw new ShardlineError(
        'CANCELLED',
        'The stream closed before every message was written: expected it to stay open for the ' +
          'whole transfer. The peer went away or the call was cancelled; reconnect and send again.',
      );
    }
    if (!stream.write(message)) await drained(stream);
  }
}

function drained(stream: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off('drain', onDrain);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onClose = () => {
      cleanup();
      reject(
        new ShardlineError(
          'CANCELLED',
          'The stream closed while waiting to write: expected it to drain. The peer went away or ' +
            'the call was cancelled; reconnect and send again.',
        ),
      );
    };
    stream.on('drain', onDrain);
    stream.once('error', onError);
    stream.once('close', onClose);
  });
}

/** Lazily maps an iterable: `mapIterable(chunks, (chunk) => message)`. */
export function* mapIterable<T, U>(
  items: Iterable<T>,
  map: (item: T) => U,
): Generator<U, void, undefined> {
  for (const item of items) yield map(item);
}
