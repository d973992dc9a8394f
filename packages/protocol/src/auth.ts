/**
 * The server side of the token check: one wrapper around every handler of a service, so no
 * method can forget it (the coordinator's Join, Train, Leave, GetStatus, a worker's peer Ring,
 * and whatever is added later). Services that must stay open, such as a gRPC health service,
 * are simply registered unwrapped. Here rather than in an app because both the coordinator and
 * every worker's peer endpoint serve calls that must carry the job's token.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type {
  Metadata,
  ServiceDefinition,
  sendUnaryData,
  UntypedHandleCall,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { ShardlineError } from '@shardline/core/errors';
import type { Logger } from '@shardline/core/logger';
import { TOKEN_ENV, tokenFromMetadata } from './security.js';
import { toGrpcStatus } from './status.js';

/** Why a call was refused, for logs (never the token itself). */
export type TokenRefusal = 'no token' | 'wrong token';

/**
 * Returns a checker that compares a presented token with `expected` in constant time. Both are
 * hashed with SHA-256 first, so `timingSafeEqual` always compares 32 bytes and neither the
 * secret's length nor the position of the first differing byte shows in the timing.
 *
 * @example
 * ```ts
 * const verify = createTokenVerifier(token);
 * if (!verify(tokenFromMetadata(call.metadata))) refuse();
 * ```
 */
export function createTokenVerifier(expected: string): (presented: string | undefined) => boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  const want = digest(expected);
  return (presented) => {
    // Hash even when nothing was presented, so "no token" and "wrong token" cost the same.
    const got = digest(presented ?? '');
    return timingSafeEqual(got, want) && presented !== undefined;
  };
}

/**
 * The coordinator's refusals, worded for whoever holds the client: what the coordinator expects
 * and where a Shardline worker takes the token from. The default of
 * {@link RequireTokenOptions.messages}. Never includes either token.
 */
export const COORDINATOR_TOKEN_REFUSALS: Readonly<Record<TokenRefusal, string>> = {
  'no token':
    `This coordinator requires a token on every call, and this call carried none. Give the worker the coordinator's token with --token or ${TOKEN_ENV} ` +
    '(it is sent as "authorization: Bearer <token>").',
  'wrong token': `The token this call carried does not match the coordinator's. Give the worker the coordinator's token with --token or ${TOKEN_ENV}.`,
};

/** Options of {@link requireToken}. */
export interface RequireTokenOptions {
  /** The token every call must carry. */
  token: string;
  /** Refusals are logged here at warn, with the peer and method (never a token). */
  logger: Logger;
  /**
   * The status message for each refusal, for the server this guards: what it expects and which
   * flag the caller sets. Default: {@link COORDINATOR_TOKEN_REFUSALS}. A worker's peer endpoint
   * passes its own wording (the calling worker needs the job's token, not "the coordinator's").
   * Never put a token in them.
   */
  messages?: Readonly<Record<TokenRefusal, string>>;
  /** Called with each refusal's reason (for counting; the coordinator's /metrics). */
  onRefusal?: (reason: TokenRefusal) => void;
}

/** The reason `metadata` fails the check, or undefined when it passes. */
function refusal(
  metadata: Metadata,
  verify: (presented: string | undefined) => boolean,
): TokenRefusal | undefined {
  const presented = tokenFromMetadata(metadata);
  if (verify(presented)) return undefined;
  return presented === undefined ? 'no token' : 'wrong token';
}

/**
 * Wraps every handler of `implementation` so that a call without the right token is answered
 * UNAUTHENTICATED (and logged at warn with the peer and method) before the handler runs. Works
 * for every kind of method: unary and client-streaming calls are answered through their
 * callback, server-streaming and bidirectional ones with `emit('error', status)`.
 *
 * @example
 * ```ts
 * server.addService(CoordinatorServiceDefinition,
 *   requireToken(CoordinatorServiceDefinition, cluster.service, { token, logger }));
 * ```
 */
export function requireToken<S extends UntypedServiceImplementation>(
  definition: ServiceDefinition,
  implementation: S,
  options: RequireTokenOptions,
): S {
  const verify = createTokenVerifier(options.token);
  const messages = options.messages ?? COORDINATOR_TOKEN_REFUSALS;
  const guarded: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(implementation)) {
    const method = definition[name];
    if (!method) {
      throw new ShardlineError(
        'INTERNAL',
        `The service implementation has a handler "${name}" that its definition lacks.`,
      );
    }
    const call = handler as (...args: unknown[]) => unknown;
    const wrapped = (...args: unknown[]) => {
      const incoming = args[0] as { metadata: Metadata; getPeer(): string };
      const reason = refusal(incoming.metadata, verify);
      if (reason === undefined) return call(...args);
      options.logger.warn('refused a call without a valid token', {
        method: method.path,
        peer: incoming.getPeer(),
        reason,
      });
      options.onRefusal?.(reason);
      const status = toGrpcStatus(new ShardlineError('UNAUTHENTICATED', messages[reason]));
      if (method.responseStream) {
        // Streaming responses have no callback: emit('error') ends the call with this status
        // (destroy() would end it with none, and the client would wait).
        (incoming as unknown as { emit(event: 'error', e: unknown): void }).emit('error', status);
      } else {
        (args[1] as sendUnaryData<unknown>)(status);
      }
    };
    guarded[name] = wrapped as UntypedHandleCall;
  }
  return guarded as S;
}
