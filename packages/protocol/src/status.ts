/**
 * ShardlineError <-> gRPC status, at the server edge only. Handlers throw ShardlineErrors like
 * any other code; the one place that answers the RPC converts with {@link toGrpcStatus}, and the
 * client converts what it receives back with {@link fromGrpcStatus}. The exact Shardline code
 * travels in the `shardline-error-code` trailer, so the round trip is lossless between Shardline
 * peers, while other gRPC clients still see a fitting standard status code.
 */

import { Metadata, type ServerErrorResponse, type StatusObject, status } from '@grpc/grpc-js';
import {
  isShardlineError,
  ShardlineError,
  type ShardlineErrorCode,
  ShardlineErrorCodes,
  toShardlineError,
} from '@shardline/core/errors';

/** The trailer that carries the exact {@link ShardlineErrorCode} next to the gRPC status. */
export const ERROR_CODE_METADATA_KEY = 'shardline-error-code';

/**
 * The gRPC status code for each Shardline code. FAILED_PRECONDITION for MISMATCH: the request
 * is well formed but the two sides disagree (versions, fingerprints), which retrying will not
 * fix; DATA_LOSS for DATA_CORRUPT, gRPC's name for unrecoverable damaged data.
 */
export const GRPC_STATUS_FOR_CODE: Readonly<Record<ShardlineErrorCode, status>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  DATA_CORRUPT: status.DATA_LOSS,
  MISMATCH: status.FAILED_PRECONDITION,
  // The server cannot compute, and will not until someone fixes its installation: not retryable.
  BACKEND_UNAVAILABLE: status.FAILED_PRECONDITION,
  NETWORK: status.UNAVAILABLE,
  // Non-finite values where finite ones are required: the values are out of the valid range.
  NUMERIC: status.OUT_OF_RANGE,
  CANCELLED: status.CANCELLED,
  TIMEOUT: status.DEADLINE_EXCEEDED,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  INTERNAL: status.INTERNAL,
  // gRPC's own code for a transport that broke or a server that went away: worth retrying.
  CONNECTION_LOST: status.UNAVAILABLE,
};

/** The Shardline code for a gRPC status received without the `shardline-error-code` trailer. */
export const CODE_FOR_GRPC_STATUS: Readonly<Record<status, ShardlineErrorCode>> = {
  [status.OK]: 'INTERNAL', // an "error" with status OK is a bug somewhere
  [status.CANCELLED]: 'CANCELLED',
  [status.UNKNOWN]: 'INTERNAL',
  [status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [status.DEADLINE_EXCEEDED]: 'TIMEOUT',
  [status.NOT_FOUND]: 'NOT_FOUND',
  [status.ALREADY_EXISTS]: 'INVALID_ARGUMENT',
  [status.PERMISSION_DENIED]: 'UNAUTHENTICATED',
  // Mostly "message larger than max": the sender exceeded a limit it should have respected.
  [status.RESOURCE_EXHAUSTED]: 'INVALID_ARGUMENT',
  [status.FAILED_PRECONDITION]: 'MISMATCH',
  [status.ABORTED]: 'CANCELLED',
  [status.OUT_OF_RANGE]: 'NUMERIC',
  // The server does not know the method: it speaks another version of the protocol.
  [status.UNIMPLEMENTED]: 'MISMATCH',
  [status.INTERNAL]: 'INTERNAL',
  [status.UNAVAILABLE]: 'NETWORK',
  [status.DATA_LOSS]: 'DATA_CORRUPT',
  [status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
};

// What to do about statuses that come from gRPC itself rather than from a Shardline handler.
const HINTS: Partial<Record<status, string>> = {
  [status.UNAVAILABLE]:
    'Check that the coordinator is running and reachable at that address (host, port, firewall).',
  [status.DEADLINE_EXCEEDED]:
    'The peer is overloaded or unreachable; retry, or raise the deadline if the work is legitimately slow.',
  [status.RESOURCE_EXHAUSTED]:
    'A message exceeded a size limit: lower the chunk size, or raise grpc.max_receive_message_length on the receiver.',
  [status.UNIMPLEMENTED]:
    'The server does not offer this method: run the same Shardline release on both sides.',
};

/**
 * Converts anything thrown into the status a grpc-js handler answers with: pass it to a unary
 * `callback(toGrpcStatus(error))`, or end a stream with `call.emit('error', toGrpcStatus(error))`
 * (not `call.destroy(error)`: a destroyed call sends no status and its client waits forever).
 * The message is the error's own (what was expected, found, what to do); the exact code rides
 * along in the `shardline-error-code` trailer. An error that already carries a numeric gRPC
 * `code` (a ServiceError from a downstream call, a hand-made status) keeps that code.
 */
export function toGrpcStatus(error: unknown): ServerErrorResponse & StatusObject {
  if (!isShardlineError(error) && isGrpcStatusLike(error)) {
    const details = error.details ?? (error instanceof Error ? error.message : '');
    return Object.assign(new Error(details), {
      name: 'ShardlineGrpcStatus',
      code: error.code,
      details,
      metadata: error.metadata instanceof Metadata ? error.metadata : new Metadata(),
    });
  }
  const shardlineError = toShardlineError(error);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, shardlineError.code);
  return Object.assign(new Error(shardlineError.message), {
    name: 'ShardlineGrpcStatus',
    code: GRPC_STATUS_FOR_CODE[shardlineError.code],
    details: shardlineError.message,
    metadata,
  });
}

function isGrpcStatusLike(
  value: unknown,
): value is { code: status; details?: string; metadata?: unknown } {
  if (typeof value !== 'object' || value === null) return false;
  const code = (value as { code?: unknown }).code;
  // Node system errors have string codes ("ENOENT"); gRPC codes are the integers 0 to 16.
  return typeof code === 'number' && Number.isInteger(code) && code > 0 && code <= 16;
}

/** The name of a gRPC status code ("UNAVAILABLE"), for messages. */
export function grpcStatusName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `status ${code}`;
}

/** Where a failed call's status was received: it changes what two statuses mean. */
export interface ReceivedStatusContext {
  /**
   * The call was an established stream. UNAVAILABLE then means its connection broke, and so
   * does CANCELLED unless this side cancelled it (`cancelledHere`): the peer's server went
   * away mid-call. Both become CONNECTION_LOST.
   */
  stream?: { cancelledHere: boolean };
}

/**
 * Converts a failed call's error (a grpc-js ServiceError, or any `{ code, details, metadata }`)
 * into a {@link ShardlineError}. A Shardline peer's code and message come back exactly; other
 * statuses map by gRPC code, with a hint on what to do. The original error is the `cause`.
 *
 * @example
 * ```ts
 * for await (const message of call) handle(message);
 * // in the catch: a broken stream is CONNECTION_LOST, worth reconnecting
 * throw fromGrpcStatus(error, { stream: { cancelledHere: signal.aborted } });
 * ```
 */
export function fromGrpcStatus(
  error: Partial<StatusObject> & { message?: string },
  context: ReceivedStatusContext = {},
): ShardlineError {
  if (isShardlineError(error)) return error;
  const grpcCode = typeof error.code === 'number' ? (error.code as status) : status.UNKNOWN;
  const carried = error.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const details = error.details ?? error.message ?? '';
  const known =
    typeof carried === 'string' && (ShardlineErrorCodes as readonly string[]).includes(carried)
      ? (carried as ShardlineErrorCode)
      : undefined;
  const info = { details: { grpcCode, grpcStatus: grpcStatusName(grpcCode) } };
  if (known) {
    // The peer's message already says what was expected, found and what to do.
    return new ShardlineError(known, details, { cause: error, ...info });
  }
  if (
    context.stream &&
    (grpcCode === status.UNAVAILABLE ||
      (grpcCode === status.CANCELLED && !context.stream.cancelledHere))
  ) {
    return new ShardlineError(
      'CONNECTION_LOST',
      `The stream's connection broke (${grpcStatusName(grpcCode)}: ${details || 'no details'}): the peer exited, restarted or became unreachable.`,
      { cause: error, ...info },
    );
  }
  const hint = HINTS[grpcCode];
  return new ShardlineError(
    CODE_FOR_GRPC_STATUS[grpcCode] ?? 'INTERNAL',
    `gRPC call failed with ${grpcStatusName(grpcCode)}: ${details || '(no details)'}${hint ? `. ${hint}` : ''}`,
    { cause: error, ...info },
  );
}
