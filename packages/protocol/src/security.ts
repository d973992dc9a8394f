/**
 * The wire side of Shardline's shared-secret authentication, used by both ends: which call
 * metadata carries the token, how a client attaches it to every call, what a valid token looks
 * like, and which listen/dial hosts count as loopback (where a channel without TLS or a token
 * is acceptable). The server-side check lives in the coordinator; TLS files in tlsFiles.ts.
 */

import { readFileSync } from 'node:fs';
import {
  InterceptingCall,
  type Interceptor,
  type Metadata,
  type MetadataValue,
} from '@grpc/grpc-js';
import { ShardlineError } from '@shardline/core/errors';
import type { FileForm } from '@shardline/core/settings';

/** The standard header a worker sends its token in, as `Bearer <token>`. */
export const AUTHORIZATION_METADATA_KEY = 'authorization';

/**
 * An alternative header with the bare token, for tools where setting `authorization` is
 * awkward (some proxies rewrite it). The coordinator accepts either.
 */
export const TOKEN_METADATA_KEY = 'shardline-token';

/** The environment variable both CLIs read the token from (preferred over `--token`). */
export const TOKEN_ENV = 'SHARDLINE_TOKEN';

/**
 * The environment variable both CLIs read a token file's path from (`--token-file`): the way to
 * hand over a mounted Kubernetes Secret or a systemd credential without putting the secret
 * itself in the environment.
 */
export const TOKEN_FILE_ENV = 'SHARDLINE_TOKEN_FILE';

/** Shortest token accepted without a warning: 128 bits as hex is 32 characters. */
export const RECOMMENDED_TOKEN_LENGTH = 16;

/**
 * Checks that `token` can travel as gRPC metadata unchanged and returns it. Visible ASCII only
 * (0x21-0x7E): grpc-js refuses other bytes in header values, and surrounding whitespace (a
 * trailing newline from a file, say) would make two equal-looking secrets differ. The message
 * never quotes the token. `source` names where it came from ("--token or SHARDLINE_TOKEN").
 */
export function checkToken(token: string, source: string): string {
  if (token.length === 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${source} is empty: expected a shared secret, such as the output of \`openssl rand -hex 32\`. Set it, or leave it out to run without a token.`,
    );
  }
  const bad = [...token].findIndex((c) => c < '!' || c > '~');
  if (bad >= 0) {
    const what = /\s/.test(token[bad] ?? '') ? 'whitespace' : 'a character outside visible ASCII';
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${source} contains ${what} at position ${bad + 1}: expected visible ASCII characters only (letters, digits, punctuation), because the token travels as gRPC metadata. ` +
        'If it came from a file, strip the trailing newline; `openssl rand -hex 32` makes a suitable one.',
    );
  }
  return token;
}

/**
 * Checks a token given to a CLI (see {@link checkToken}; errors name `--token / SHARDLINE_TOKEN`)
 * and warns through `logger` when it is short enough to guess. Both CLIs start with it, so a
 * coordinator and its workers judge a token alike. Undefined in, undefined out (no token).
 */
export function acceptToken(
  token: string | undefined,
  logger: { warn(message: string): void },
): string | undefined {
  if (token === undefined) return undefined;
  const checked = checkToken(token, `--token / ${TOKEN_ENV}`);
  if (checked.length < RECOMMENDED_TOKEN_LENGTH) {
    logger.warn(
      `the token is shorter than ${RECOMMENDED_TOKEN_LENGTH} characters and could be guessed; use a random one, such as \`openssl rand -hex 32\``,
    );
  }
  return checked;
}

/**
 * The token a call carries: `authorization: Bearer <token>` (the scheme is case-insensitive),
 * else `shardline-token: <token>`. Undefined when the call carries neither.
 */
export function tokenFromMetadata(metadata: Metadata): string | undefined {
  for (const value of metadata.get(AUTHORIZATION_METADATA_KEY)) {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(asText(value));
    if (match?.[1]) return match[1];
  }
  const bare = metadata.get(TOKEN_METADATA_KEY)[0];
  return bare === undefined ? undefined : asText(bare).trim() || undefined;
}

function asText(value: MetadataValue): string {
  return typeof value === 'string' ? value : value.toString('utf8');
}

/**
 * A client interceptor that sends `authorization: Bearer <token>` on every call, streams
 * included. Pass it in the client's options: `new CoordinatorClient(address, creds,
 * { ...CHANNEL_OPTIONS, interceptors: [createTokenInterceptor(token)] })`. An interceptor rather
 * than call credentials because grpc-js only lets call credentials ride on TLS channels, and a
 * token on a loopback channel without TLS is a supported setup.
 */
export function createTokenInterceptor(token: string): Interceptor {
  const header = `Bearer ${checkToken(token, 'The token')}`;
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(AUTHORIZATION_METADATA_KEY, header);
        next(metadata, listener);
      },
    });
}

/** Splits `host:port` or `[v6]:port` into its host (brackets removed) and port. */
export function splitHostPort(address: string): { host: string; port: string } {
  const i = address.lastIndexOf(':');
  if (i < 0) return { host: address, port: '' };
  const host = address.slice(0, i);
  return {
    host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host,
    port: address.slice(i + 1),
  };
}

/**
 * Whether `host` (a listen or dial host, brackets optional) only reaches this machine:
 * 127.0.0.0/8, ::1, an IPv4-mapped 127.x address, or the name `localhost`. Other names are
 * treated as non-loopback even when they resolve to it, since DNS can change under a running
 * job.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice('::ffff:'.length) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/** Whether `host` is a wildcard address (listen on every interface): 0.0.0.0 or ::. */
export function isWildcardHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:0' || h === '';
}

/**
 * Reads a token from a file and checks it with {@link checkToken}. One trailing newline (what
 * `echo` and most editors add) is dropped; anything else must be part of a valid token.
 * `namedBy` says where the path came from ("--token-file", "SHARDLINE_TOKEN_FILE"), for errors.
 *
 * @example
 * ```ts
 * const token = readTokenFile('/run/secrets/shardline/token', 'SHARDLINE_TOKEN_FILE');
 * ```
 */
export function readTokenFile(path: string, namedBy: string): string {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ShardlineError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT',
      `The token file ${path} (from ${namedBy}) cannot be read (${code === 'ENOENT' ? 'it does not exist' : (code ?? (error as Error).message)}): expected a file holding the shared token. Fix the path or its permissions (a Kubernetes Secret must be mounted there).`,
      { cause: error },
    );
  }
  const token = raw.replace(/\r?\n$/, '');
  if (token === '') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The token file ${path} (from ${namedBy}) is empty: expected the shared token, such as the output of \`openssl rand -hex 32\`. Write the token into it, or unset ${namedBy}.`,
    );
  }
  return checkToken(token, `The token file ${path} (from ${namedBy})`);
}

/**
 * The token's two forms as settings (`--token` and `--token-file`, one setting in the end), the
 * same for both CLIs' settings tables: the file is read, and a token given directly is checked.
 */
export const TOKEN_FILE_FORM = {
  value: 'token',
  file: 'tokenFile',
  nouns: ['a token', 'a token file'],
  read: readTokenFile,
  check: checkToken,
} as const satisfies FileForm<'token' | 'tokenFile'>;
