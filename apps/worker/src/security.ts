/**
 * The worker's side of channel security: its flags, the channel credentials and token
 * interceptor built from them (validated at startup, before the backend loads or data is read),
 * and the messages for the ways a secured coordinator can turn a worker away. Refusals of the
 * token or of the TLS handshake are final: retrying cannot fix them, so the worker stops at
 * once with what to change instead of knocking until --connect-timeout.
 *
 * The same settings secure ring mode's peer traffic (peer/peerTls.ts): with TLS, a worker serves
 * its peer endpoint only when it has a certificate and a CA to check its peers with, and never
 * in plaintext next to a TLS channel to the coordinator.
 */
import { type ChannelCredentials, type ClientOptions, credentials } from '@grpc/grpc-js';
import { type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  acceptToken,
  createTokenInterceptor,
  isLoopbackHost,
  readTlsFiles,
  splitHostPort,
  TOKEN_ENV,
} from '@shardline/protocol';
import type { PeerTls } from './peer/peerTls.js';

/** The worker's security settings, from any source (flag, environment, config file). */
export interface WorkerSecurityFlags {
  token?: string;
  /** TLS with the system's roots when no --tls-ca is given. */
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** The name to check the coordinator's certificate against, instead of the dialled host. */
  tlsServerName?: string;
}

/** A resolved channel: what `new CoordinatorClient(address, credentials, options)` takes. */
export interface WorkerChannel {
  credentials: ChannelCredentials;
  /** Channel options to spread after CHANNEL_OPTIONS (token interceptor, server name). */
  options: Partial<ClientOptions>;
  tls: boolean;
  /** Whether this worker presents a client certificate. */
  clientCertificate: boolean;
  /** Whether this worker sends a token. */
  token: boolean;
  /**
   * The token itself, when one is sent: the peer endpoint requires it of the other workers and
   * sends it to them (ring mode). Never logged.
   */
  tokenValue?: string;
  /**
   * What ring mode's peer traffic uses under TLS: set when the channel uses TLS with a client
   * certificate and `--tls-ca` (see {@link peerTlsGap} for why it is missing otherwise).
   */
  peerTls?: PeerTls;
}

/** A channel without TLS or token: the default, for loopback. */
export function plaintextChannel(): WorkerChannel {
  return {
    credentials: credentials.createInsecure(),
    options: {},
    tls: false,
    clientCertificate: false,
    token: false,
  };
}

/** Picks the security settings out of the worker's merged settings (config.ts). */
export function readWorkerSecurityFlags(opts: Record<string, unknown>): WorkerSecurityFlags {
  const flags: WorkerSecurityFlags = { tls: opts.tls === true };
  for (const key of ['token', 'tlsCa', 'tlsCert', 'tlsKey', 'tlsServerName'] as const) {
    const value = opts[key];
    if (typeof value === 'string') flags[key] = value;
  }
  return flags;
}

/**
 * Reads and checks the PEM files and the token, and builds the channel. Throws
 * INVALID_ARGUMENT / NOT_FOUND with the flag (and its env variable) in the message.
 */
export function resolveWorkerChannel(
  flags: WorkerSecurityFlags,
  coordinator: string,
  logger: Logger,
): WorkerChannel {
  const token = acceptToken(flags.token, logger);
  const files = readTlsFiles(
    { cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa },
    {
      cert: '--tls-cert / SHARDLINE_TLS_CERT',
      key: '--tls-key / SHARDLINE_TLS_KEY',
      ca: '--tls-ca / SHARDLINE_TLS_CA',
    },
  );
  const tls = flags.tls === true || files.ca !== undefined || files.cert !== undefined;
  if (!tls && flags.tlsServerName !== undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      '--tls-server-name / SHARDLINE_TLS_SERVER_NAME only applies to TLS connections: add --tls-ca <pem> (or --tls for a certificate the system trusts), or drop it.',
    );
  }
  if (!tls && token !== undefined && !isLoopbackHost(splitHostPort(coordinator).host)) {
    logger.warn(
      `sending the token to ${coordinator} without TLS: anyone who can watch this network can read it. Use TLS (--tls-ca) if the coordinator serves it`,
    );
  }
  const options: Partial<ClientOptions> = {};
  if (token !== undefined) options.interceptors = [createTokenInterceptor(token)];
  if (flags.tlsServerName !== undefined) {
    options['grpc.ssl_target_name_override'] = flags.tlsServerName;
  }
  return {
    credentials: tls
      ? credentials.createSsl(
          files.ca?.pem ?? null,
          files.key?.pem ?? null,
          files.cert?.pem ?? null,
        )
      : credentials.createInsecure(),
    options,
    tls,
    clientCertificate: files.cert !== undefined,
    token: token !== undefined,
    ...(token === undefined ? {} : { tokenValue: token }),
    ...(tls && files.cert && files.key && files.ca
      ? {
          peerTls: {
            ca: files.ca.pem,
            certChain: files.cert.pem,
            privateKey: files.key.pem,
            certificate: files.cert.certificates[0]!,
            certPath: files.cert.path,
          },
        }
      : {}),
  };
}

/**
 * Why a worker with this channel cannot serve a peer endpoint for ring mode, or undefined when
 * it can: plaintext channels serve one in plaintext, TLS channels only with {@link
 * WorkerChannel.peerTls}. A plaintext endpoint next to a TLS channel would let anyone who can
 * watch the network read the gradients (and the token) that TLS protects on the way to the
 * coordinator, so a TLS worker without what peer TLS needs serves none.
 */
export function peerTlsGap(channel: WorkerChannel): string | undefined {
  if (!channel.tls || channel.peerTls) return undefined;
  if (!channel.clientCertificate) {
    return (
      'ring mode under TLS needs --tls-cert and --tls-key (and --tls-ca), and this worker has no certificate: ' +
      'its peer endpoint serves with it and the other workers check it. Give it a certificate signed by the CA in --tls-ca that allows server and client authentication ' +
      '(extendedKeyUsage serverAuth,clientAuth) and lists the address it advertises'
    );
  }
  return (
    "ring mode under TLS needs --tls-ca, and this worker has none: the workers check each other's certificates against it " +
    "(the system roots of --tls would accept any publicly issued certificate). Pass --tls-ca with the CA that signed the workers' certificates"
  );
}

/** How a TLS handshake failed, as far as the error text tells. */
export type TlsFailureKind =
  | 'not-tls'
  | 'untrusted'
  | 'name-mismatch'
  | 'wrong-purpose'
  | 'client-certificate-required'
  | 'client-certificate-refused'
  | 'other';

/**
 * Recognises a TLS handshake failure in a failed call's error (grpc-js reports it as
 * UNAVAILABLE, like a coordinator that is not up yet, with OpenSSL's or Node's words in the
 * details). Undefined when the error is not one.
 */
export function tlsFailure(error: unknown): { kind: TlsFailureKind; reason: string } | undefined {
  const e = error as { details?: unknown; message?: unknown };
  const text = [e.details, e.message].filter((t) => typeof t === 'string').join(' ');
  // OpenSSL: "...:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:..."
  const openssl = /SSL routines:[^:]*:([^:]+)/.exec(text)?.[1]?.trim();
  // Node: "Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's
  // altnames: ...", or "Error: unable to verify the first certificate".
  const node =
    /Error \[ERR_TLS_[A-Z_]+\]: (.+?)(?:\. Resolution note|\n|$)/.exec(text)?.[1] ??
    /(unable to (?:verify|get) [^.\n]*|self[- ]signed certificate[^.\n]*|certificate has expired|certificate is not yet valid|unsuitable certificate purpose)/i.exec(
      text,
    )?.[1];
  const reason = openssl ?? node;
  if (reason === undefined) return undefined;
  const kinds: Array<[RegExp, TlsFailureKind]> = [
    [/wrong version number|packet length too long|http request/i, 'not-tls'],
    [/certificate required/i, 'client-certificate-required'],
    [
      /alert (bad certificate|unknown ca|certificate unknown|unsupported certificate|certificate expired|decrypt error)/i,
      'client-certificate-refused',
    ],
    [/altnames|does not match/i, 'name-mismatch'],
    // OpenSSL checks the extendedKeyUsage: a server certificate without serverAuth.
    [/unsuitable certificate purpose/i, 'wrong-purpose'],
    [/verify|issuer|self[- ]signed|expired|not yet valid/i, 'untrusted'],
  ];
  return { kind: kinds.find(([pattern]) => pattern.test(reason))?.[1] ?? 'other', reason };
}

/**
 * Rewrites a session failure caused by the coordinator's security into a message that says what
 * to change on this worker; other errors pass through as ShardlineErrors. A refused token reads
 * "the coordinator refused this worker's token: check --token / SHARDLINE_TOKEN".
 */
export function explainSecurityFailure(
  error: unknown,
  channel: WorkerChannel,
  coordinator: string,
): ShardlineError {
  const e = toShardlineError(error);
  if (e.code === 'UNAUTHENTICATED') {
    const message = channel.token
      ? `The coordinator refused this worker's token: check --token / ${TOKEN_ENV}, which must equal the coordinator's (coordinator ${coordinator}).`
      : `The coordinator requires a token and this worker sent none: check --token / ${TOKEN_ENV}, which must equal the coordinator's (coordinator ${coordinator}).`;
    return new ShardlineError('UNAUTHENTICATED', message, { cause: e });
  }
  if (e.code !== 'NETWORK') return e;
  const failure = tlsFailure(e.cause ?? e);
  if (!failure) {
    if (channel.tls) return e;
    return new ShardlineError(
      'NETWORK',
      `${e.message.replace(/\.?$/, '.')} If the coordinator serves TLS, pass --tls-ca <its CA file> (or --tls for a certificate the system trusts).`,
      { cause: e },
    );
  }
  const fix: Record<TlsFailureKind, string> = {
    'not-tls':
      'it does not speak TLS. Drop --tls / --tls-ca / --tls-cert here, or start the coordinator with --tls-cert and --tls-key',
    untrusted:
      'its certificate is not trusted by this worker. Pass --tls-ca / SHARDLINE_TLS_CA with the CA file that signed it',
    'name-mismatch':
      'its certificate does not list the address dialled. Dial a name the certificate lists, or pass --tls-server-name with one',
    'wrong-purpose':
      'its certificate does not allow server authentication. Issue the coordinator a certificate with extendedKeyUsage serverAuth (and clientAuth when it starts local workers under mutual TLS)',
    'client-certificate-required':
      "it requires a client certificate (mutual TLS). Pass --tls-cert and --tls-key with a certificate signed by the coordinator's --tls-ca",
    'client-certificate-refused':
      "it refused this worker's client certificate. Use one signed by a CA in the coordinator's --tls-ca, allowing client authentication",
    other: 'the TLS handshake failed. Check the TLS flags on both sides',
  };
  return new ShardlineError(
    failure.kind === 'not-tls' ? 'MISMATCH' : 'UNAUTHENTICATED',
    `TLS with the coordinator at ${coordinator} failed (${failure.reason}): ${fix[failure.kind]}.`,
    { cause: e },
  );
}
