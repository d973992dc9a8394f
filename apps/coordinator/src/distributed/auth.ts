/**
 * The coordinator's token check: one wrapper around every handler of a service, so no method
 * can forget it (Join, Train, Leave, GetStatus, and whatever is added later). Services that
 * must stay open, such as a gRPC health service, are simply registered unwrapped.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type {
  Metadata,
  ServiceDefinition,
  sendUnaryData,
  UntypedHandleCall,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { type Logger, ShardlineError } from '@shardline/core';
import { TOKEN_ENV, toGrpcStatus, tokenFromMetadata } from '@shardline/protocol';

/** Why a call was refused, for logs (never the token itself). */
export type TokenRefusal = 'no token' | 'wrong token';

/**
 * Returns a checker that compares a presented token with `expected` in constant time. Both are
 * hashed with SHA-256 first, so `timingSafeEqual` always compares 32 bytes and neither the
 * secret's length nor the position of the first differing byte shows in the timing.
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

/** Options of {@link requireToken}. */
export interface RequireTokenOptions {
  token: string;
  logger: Logger;
}

// Worded for whoever holds the client: what the coordinator expects and where a Shardline
// worker takes the token from. Never includes either token.
const MESSAGES: Record<TokenRefusal, string> = {
  'no token':
    `This coordinator requires a token on every call, and this call carried none. Give the worker the coordinator's token with --token or ${TOKEN_ENV} ` +
    '(it is sent as "authorization: Bearer <token>").',
  'wrong token': `The token this call carried does not match the coordinator's. Give the worker the coordinator's token with --token or ${TOKEN_ENV}.`,
};

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
 * UNAUTHENTICATED (and logged at warn with the peer and method) before the handler runs.
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
      const status = toGrpcStatus(new ShardlineError('UNAUTHENTICATED', MESSAGES[reason]));
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
