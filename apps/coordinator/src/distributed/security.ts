/**
 * Channel security of `train` (distributed): the flags, their validation at startup, the
 * policy on where the coordinator may listen without protection, the server credentials, the
 * token check, and the settings handed to local worker processes so they can connect.
 *
 * Policy, decided once here:
 * - loopback (127.0.0.0/8, ::1, localhost): anything goes; other users of this machine can
 *   reach the port, so a token is still worth setting on shared hosts;
 * - any other address with neither a token nor TLS: refused unless `--insecure`;
 * - a token without TLS: allowed, with a warning that the token travels in clear text;
 * - TLS without a token or client certificates: allowed, with a warning that any client that
 *   reaches the port can join.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import {
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { type Logger, ShardlineError } from '@shardline/core';
import {
  acceptToken,
  type CertificateFile,
  chainsTo,
  isLoopbackHost,
  isSelfSigned,
  isWildcardHost,
  readTlsFiles,
  readTokenFile,
  requireToken,
  splitHostPort,
  type TlsFiles,
  TOKEN_ENV,
  TOKEN_FILE_ENV,
} from '@shardline/protocol';
import type { RefusalHook } from './refusals.js';

/** The security flags of `train`, the token file already read. */
export interface ServerSecurityFlags {
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** Listen beyond loopback with neither a token nor TLS. */
  insecure?: boolean;
}

/** How a local worker process reaches and authenticates to this coordinator. */
export interface LocalWorkerLink {
  /** host:port to dial: loopback when the coordinator listens on a wildcard address. */
  coordinator: string;
  /** Extra worker flags (TLS paths and server name; never the token). */
  args: string[];
  /** Environment overrides; `undefined` removes a variable inherited from this process. */
  env: Record<string, string | undefined>;
}

/** The resolved security of one coordinator. */
export interface ServerSecurity {
  credentials: ServerCredentials;
  /** `off`, `tls` (server certificate only) or `mutual` (client certificates required). */
  tls: 'off' | 'tls' | 'mutual';
  /** Whether every call must carry the token. */
  tokenRequired: boolean;
  /**
   * The service implementation to register: wrapped with the token check when one is set.
   * `onRefusal` hears each call refused for its token (`no_token` or `wrong_token`).
   */
  protect<S extends UntypedServiceImplementation>(
    definition: ServiceDefinition,
    implementation: S,
    logger: Logger,
    onRefusal?: RefusalHook,
  ): S;
  /** What local worker processes need to join, given the address the server got. */
  localWorkers(address: string): LocalWorkerLink;
}

/**
 * Security settings as a program holds them before the token file is read: the fields of
 * {@link ServerSecurityFlags} plus `tokenFile`.
 */
export interface SecuritySettings extends ServerSecurityFlags {
  /** A file holding the token (a mounted Kubernetes Secret); not together with `token`. */
  tokenFile?: string;
}

/**
 * Reads the token file of `settings`, refusing it beside a token, and returns the flags
 * {@link resolveServerSecurity} takes. `sourceOf('tokenFile')` returning `env` makes errors name
 * SHARDLINE_TOKEN_FILE instead of --token-file. (`shardline-coordinator train` resolves the
 * token file with its other settings, in trainConfig.ts, so that a flag overrides a file given
 * in the environment or the config file; this is for programs that embed the coordinator.)
 */
export function readSecurityFlags(
  settings: SecuritySettings,
  sourceOf?: (key: 'tokenFile') => string | undefined,
): ServerSecurityFlags {
  const { token, tokenFile, tlsCert, tlsKey, tlsCa } = settings;
  if (token !== undefined && tokenFile !== undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Both a token (--token or ${TOKEN_ENV}) and a token file (--token-file or ${TOKEN_FILE_ENV}) are set: expected one of them. Keep one and remove the other.`,
    );
  }
  const namedBy = sourceOf?.('tokenFile') === 'env' ? TOKEN_FILE_ENV : '--token-file';
  const read = tokenFile === undefined ? token : readTokenFile(tokenFile, namedBy);
  return {
    insecure: settings.insecure === true,
    ...(read === undefined ? {} : { token: read }),
    ...(tlsCert === undefined ? {} : { tlsCert }),
    ...(tlsKey === undefined ? {} : { tlsKey }),
    ...(tlsCa === undefined ? {} : { tlsCa }),
  };
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/**
 * Validates the flags (reads and checks the PEM files, the token, the listen policy) and
 * returns what the server needs. Throws INVALID_ARGUMENT / NOT_FOUND before anything binds or
 * trains; logs the resulting setup at info and every weakened one at warn.
 */
export function resolveServerSecurity(
  flags: ServerSecurityFlags,
  where: { listen: string; localWorkers: number },
  logger: Logger,
): ServerSecurity {
  const token = acceptToken(flags.token, logger);
  if (flags.tlsCa !== undefined && flags.tlsCert === undefined && flags.tlsKey === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      "--tls-ca makes the coordinator require client certificates, which only exists over TLS: add --tls-cert and --tls-key with the coordinator's own certificate and key.",
    );
  }
  const files = readTlsFiles({ cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa });
  const tls: ServerSecurity['tls'] = !files.cert ? 'off' : files.ca ? 'mutual' : 'tls';
  const { host } = splitHostPort(where.listen);
  checkListenPolicy(where.listen, !isLoopbackHost(host), token !== undefined, tls, flags, logger);
  if (tls === 'mutual' && where.localWorkers > 0) checkLocalClientCertificate(files);
  logger.info('channel security', {
    listen: where.listen,
    tls,
    token: token === undefined ? 'off' : 'required',
    ...(files.cert
      ? { certificate: files.cert.certificates[0]!.subject.replace(/\n/g, ', ') }
      : {}),
  });

  const credentials = files.cert
    ? ServerCredentials.createSsl(
        files.ca?.pem ?? null,
        [{ cert_chain: files.cert.pem, private_key: files.key!.pem }],
        files.ca !== undefined,
      )
    : ServerCredentials.createInsecure();
  return {
    credentials,
    tls,
    tokenRequired: token !== undefined,
    protect(definition, implementation, log, onRefusal) {
      return token === undefined
        ? implementation
        : requireToken(definition, implementation, {
            token,
            logger: log,
            ...(onRefusal
              ? {
                  onRefusal: (reason) =>
                    onRefusal(reason === 'no token' ? 'no_token' : 'wrong_token'),
                }
              : {}),
          });
    },
    localWorkers(address) {
      return localWorkerLink(address, files, token);
    },
  };
}

function checkListenPolicy(
  listen: string,
  exposed: boolean,
  hasToken: boolean,
  tls: ServerSecurity['tls'],
  flags: ServerSecurityFlags,
  logger: Logger,
): void {
  if (!exposed) return;
  if (!hasToken && tls === 'off') {
    if (!flags.insecure) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Refusing to listen on ${listen} with neither a token nor TLS: any machine that reaches that port could join the job, read the model and send it gradients. ` +
          `Set a token (--token or ${TOKEN_ENV}) and/or TLS (--tls-cert and --tls-key, plus --tls-ca for client certificates), ` +
          'listen on 127.0.0.1, or pass --insecure on a network you trust completely.',
      );
    }
    logger.warn(
      `--insecure: listening on ${listen} with neither a token nor TLS; anyone who reaches this port can join the job, read the model and send it gradients`,
    );
    return;
  }
  if (hasToken && tls === 'off') {
    logger.warn(
      `listening on ${listen} without TLS: the token, the weights and the gradients travel in clear text, so anyone who can watch this network can take the token and join. Add --tls-cert and --tls-key`,
    );
  } else if (!hasToken && tls === 'tls') {
    logger.warn(
      `listening on ${listen} with TLS but no client authentication: traffic is encrypted, but any client that reaches this port can join. Add --token or --tls-ca`,
    );
  }
}

/** Under mutual TLS, local workers present the coordinator's own certificate: check it can. */
function checkLocalClientCertificate(files: TlsFiles): void {
  const chain = files.cert!.certificates;
  const leaf = chain[0]!;
  const signed = chainsTo(chain, files.ca!.certificates);
  const usages = leaf.keyUsage;
  const clientAuth = usages === undefined || usages.includes(CLIENT_AUTH_OID);
  if (signed && clientAuth) return;
  const problem = !signed
    ? `is not signed by a CA in --tls-ca ${files.ca!.path}`
    : 'does not allow client authentication (its extendedKeyUsage lacks clientAuth)';
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `With --tls-ca, local workers present the coordinator's own certificate as their client certificate, but --tls-cert ${files.cert!.path} ${problem}. ` +
      'Issue the coordinator a certificate signed by that CA with `-addext extendedKeyUsage=serverAuth,clientAuth`, or run with --local-workers 0 and start workers with their own certificates.',
  );
}

/** The address local workers dial: a wildcard listen address is reached over loopback. */
export function localDialAddress(address: string): string {
  const { host, port } = splitHostPort(address);
  if (!isWildcardHost(host)) return address;
  return isIP(host) === 6 ? `[::1]:${port}` : `127.0.0.1:${port}`;
}

function localWorkerLink(
  address: string,
  files: TlsFiles,
  token: string | undefined,
): LocalWorkerLink {
  const coordinator = localDialAddress(address);
  // startLocalWorkers drops inherited worker variables; the token is the one the coordinator sets.
  const env: Record<string, string | undefined> = { [TOKEN_ENV]: token };
  const args: string[] = [];
  if (files.cert) {
    args.push(...trustArgs(files.cert, files.ca));
    const name = serverNameFor(files.cert, splitHostPort(coordinator).host);
    if (name !== undefined) args.push('--tls-server-name', name);
    if (files.ca) {
      args.push('--tls-cert', resolve(files.cert.path), '--tls-key', resolve(files.key!.path));
    }
  }
  return { coordinator, args, env };
}

/**
 * What local workers verify the coordinator's certificate against: --tls-ca when it signed the
 * certificate, else the certificate file itself when it holds its own root (a self-signed
 * certificate, or a chain ending in its root), else the system roots (a public certificate).
 */
function trustArgs(cert: CertificateFile, ca: CertificateFile | undefined): string[] {
  if (ca && chainsTo(cert.certificates, ca.certificates)) return ['--tls-ca', resolve(ca.path)];
  const roots = cert.certificates.filter(isSelfSigned);
  if (roots.length > 0 && chainsTo(cert.certificates, roots)) {
    return ['--tls-ca', resolve(cert.path)];
  }
  return ['--tls'];
}

/**
 * The name local workers check the certificate against, when the dialled host is not one it
 * covers. `localhost` is preferred when covered: it also keeps Node from warning about an IP
 * address used as the TLS server name (DEP0123).
 */
function serverNameFor(cert: CertificateFile, dialHost: string): string | undefined {
  const leaf = cert.certificates[0]!;
  if (isLoopbackHost(dialHost) && leaf.checkHost('localhost') !== undefined) return 'localhost';
  const covered = isIP(dialHost) ? leaf.checkIP(dialHost) : leaf.checkHost(dialHost);
  if (covered !== undefined) return undefined;
  const names = (leaf.subjectAltName ?? '').split(/,\s*/);
  const dns = names.find((n) => n.startsWith('DNS:') && !n.includes('*'))?.slice(4);
  const ip = names.find((n) => n.startsWith('IP Address:'))?.slice('IP Address:'.length);
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject)?.[1];
  return dns ?? ip ?? cn;
}
