/**
 * TLS between ring members (issue #13): a worker whose channel to the coordinator uses mutual
 * TLS serves its peer endpoint with the same certificate and CA, requires a certificate signed
 * by that CA of every peer that calls it, and presents its own when it dials its right
 * neighbour. So peers authenticate each other exactly as the coordinator authenticates workers,
 * and the job's token is still required on every call.
 *
 * Each certificate is then used both ways: a worker serves with it (peers dial its advertised
 * address and check that the certificate lists that host and allows server authentication) and
 * dials with it (the neighbour checks that it allows client authentication). OpenSSL checks
 * both purposes during the handshake, where a failure reads only "unsuitable certificate
 * purpose" or, on the dialling side of a refused client certificate, "Failed to connect"; the
 * checks here say the same thing at startup, naming the file, the host and the fix.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import {
  type ChannelCredentials,
  credentials,
  ServerCredentials,
  type ServiceError,
} from '@grpc/grpc-js';
import { ShardlineError } from '@shardline/core';
import { type TlsFailureKind, tlsFailure } from '../security.js';

/** What a worker needs to serve and dial ring peers over mutual TLS, read from its TLS flags. */
export interface PeerTls {
  /** `--tls-ca`'s PEM: the certificates of peers, on either side of a stream, must chain to it. */
  ca: Buffer;
  /** `--tls-cert`'s PEM (the leaf, then its chain). */
  certChain: Buffer;
  /** `--tls-key`'s PEM. */
  privateKey: Buffer;
  /** The leaf of `--tls-cert`, for the startup checks. */
  certificate: X509Certificate;
  /** `--tls-cert`'s path, for messages. */
  certPath: string;
}

/** id-kp-serverAuth: the certificate may identify a TLS server. */
export const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';
/** id-kp-clientAuth: the certificate may identify a TLS client. */
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
/** anyExtendedKeyUsage: every purpose. */
const ANY_USAGE_OID = '2.5.29.37.0';

/**
 * What `certificate` lacks to serve a peer endpoint that others dial at `host` and to dial
 * peers with: each entry completes "the certificate ...". Empty when it can do both. The
 * purposes follow OpenSSL: no extendedKeyUsage extension allows every purpose.
 *
 * @example
 * ```ts
 * peerCertificateProblems(cert, '10.0.0.6');
 * // ['does not allow server authentication (its extendedKeyUsage is clientAuth)',
 * //  'does not list 10.0.0.6 (it lists DNS:gpu-2.example)']
 * ```
 */
export function peerCertificateProblems(certificate: X509Certificate, host: string): string[] {
  const problems: string[] = [];
  const usages = certificate.keyUsage;
  const allows = (oid: string) =>
    usages === undefined || usages.includes(oid) || usages.includes(ANY_USAGE_OID);
  const listed = `its extendedKeyUsage is ${describeUsages(usages ?? [])}`;
  if (!allows(SERVER_AUTH_OID)) {
    problems.push(`does not allow server authentication (${listed})`);
  }
  if (!allows(CLIENT_AUTH_OID)) {
    problems.push(`does not allow client authentication (${listed})`);
  }
  // The same rules Node's TLS client applies when it dials `host`: IP addresses match IP
  // entries only; names match DNS entries, or the subject's CN when there are none.
  const bare = host.replace(/^\[|\]$/g, '');
  const covered = isIpAddress(bare)
    ? certificate.checkIP(bare) !== undefined
    : certificate.checkHost(bare) !== undefined;
  if (!covered) {
    const names = certificate.subjectAltName;
    problems.push(
      `does not list ${bare} (${names ? `it lists ${names}` : `it has no subjectAltName; its subject is ${certificate.subject.replace(/\n/g, ', ')}`})`,
    );
  }
  return problems;
}

/**
 * Checks at startup that this worker's certificate can serve its peer endpoint at the host it
 * advertises, and dial its peers: throws INVALID_ARGUMENT saying what it lacks and the three
 * ways out otherwise. `advertised` is the host other members dial (no port), `port` the one
 * they dial when known (for the example in the message).
 */
export function checkPeerCertificate(tls: PeerTls, advertised: string, port?: number): void {
  const problems = peerCertificateProblems(tls.certificate, advertised);
  if (problems.length === 0) return;
  const bare = advertised.replace(/^\[|\]$/g, '');
  const san = isIpAddress(bare) ? `IP:${bare}` : `DNS:${bare}`;
  const example = port === undefined || port === 0 ? '<port>' : String(port);
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Ring mode under TLS: the other workers dial this worker's peer endpoint at ${bare} and check its certificate, but --tls-cert ${tls.certPath} ${problems.join(' and ')}. ` +
      `Issue it a certificate signed by the CA in --tls-ca with \`-addext subjectAltName=${san} -addext extendedKeyUsage=serverAuth,clientAuth\`, ` +
      `or advertise a name it lists (--peer-listen <address>:${example} --peer-advertise <name>:${example}), or pass --no-peer to join without ring mode.`,
    { details: { field: 'tlsCert', host: bare } },
  );
}

/**
 * The peer endpoint's server credentials: this worker's certificate, and a certificate signed
 * by `--tls-ca` required of every caller (mutual TLS).
 */
export function peerServerCredentials(tls: PeerTls): ServerCredentials {
  return ServerCredentials.createSsl(
    tls.ca,
    [{ cert_chain: tls.certChain, private_key: tls.privateKey }],
    true,
  );
}

/**
 * The credentials a member dials its right neighbour with: the neighbour's certificate must
 * chain to `--tls-ca` and list the address it advertised; this worker's certificate goes along.
 */
export function peerChannelCredentials(tls: PeerTls): ChannelCredentials {
  return credentials.createSsl(tls.ca, tls.privateKey, tls.certChain);
}

/** Who a failed ring stream was dialling, for {@link explainPeerTlsFailure}. */
export interface DialledPeer {
  /** The neighbour's advertised `host:port`. */
  address: string;
  /** Its rank in the formation. */
  rank: number;
  /** Whether this member dialled it with TLS. */
  tls: boolean;
}

/**
 * A failed ring stream's status as a TLS failure between two members, naming the neighbour's
 * address and what to change; undefined when the failure has nothing to do with TLS. Its code
 * is UNAUTHENTICATED: a configuration fault that no retry in the same formation can fix, and
 * not a refusal of something a neighbour sent (so it names no suspect).
 *
 * Under TLS a refused client certificate leaves the dialling side only "Failed to connect" (the
 * server closes the connection after the handshake), so that status is read as a likely
 * refusal of this worker's certificate, said as such.
 */
export function explainPeerTlsFailure(
  error: Pick<ServiceError, 'code' | 'details'> & { message?: string },
  peer: DialledPeer,
): ShardlineError | undefined {
  const failure = tlsFailure(error);
  const where = `TLS with the peer endpoint of rank ${peer.rank} at ${peer.address}`;
  const details = { peer: peer.rank, address: peer.address };
  if (failure) {
    return new ShardlineError(
      'UNAUTHENTICATED',
      `${where} failed (${failure.reason}): ${PEER_FIXES[failure.kind]}.`,
      { cause: error, details: { ...details, tlsFailure: failure.kind } },
    );
  }
  if (peer.tls && /Failed to connect/.test(`${error.details ?? ''} ${error.message ?? ''}`)) {
    return new ShardlineError(
      'UNAUTHENTICATED',
      `${where} failed (the connection closed during the handshake): if that worker is up, its peer endpoint refused this worker's certificate. ` +
        "Each worker accepts only certificates signed by a CA in its own --tls-ca that allow client authentication: give every worker of the job a certificate from the same CA, with extendedKeyUsage serverAuth,clientAuth, and that CA's file as --tls-ca.",
      { cause: error, details: { ...details, tlsFailure: 'client-certificate-refused' } },
    );
  }
  return undefined;
}

/** The fix for each handshake failure, as seen by the member that dialled. */
const PEER_FIXES: Readonly<Record<TlsFailureKind, string>> = {
  'not-tls':
    'it does not speak TLS. Every worker of a job whose coordinator uses TLS must serve its peer endpoint with TLS: run the same Shardline release on each, with --tls-cert and --tls-key',
  untrusted:
    "its certificate is not signed by a CA in this worker's --tls-ca. Give every worker of the job a certificate from the same CA, and that CA's file as --tls-ca",
  'name-mismatch':
    'its certificate does not list the address it advertised. Issue that worker a certificate that lists it (subjectAltName=IP:<address> or DNS:<name>), or start it with --peer-advertise <name>:<port> for a name its certificate lists',
  'wrong-purpose':
    'its certificate does not allow server authentication. Issue that worker a certificate with extendedKeyUsage serverAuth,clientAuth',
  'client-certificate-required':
    'it requires a client certificate and this worker presented none. Start this worker with --tls-cert and --tls-key',
  'client-certificate-refused':
    "it refused this worker's certificate. Use one signed by a CA in that worker's --tls-ca, with extendedKeyUsage serverAuth,clientAuth",
  other:
    "the TLS handshake failed. Check --tls-ca, --tls-cert and --tls-key on both workers: each certificate must be signed by the CA in the other worker's --tls-ca",
};

function describeUsages(oids: readonly string[]): string {
  const names: Record<string, string> = {
    [SERVER_AUTH_OID]: 'serverAuth',
    [CLIENT_AUTH_OID]: 'clientAuth',
    '1.3.6.1.5.5.7.3.3': 'codeSigning',
    '1.3.6.1.5.5.7.3.4': 'emailProtection',
  };
  return oids.length === 0 ? '(empty)' : oids.map((oid) => names[oid] ?? oid).join(',');
}

function isIpAddress(host: string): boolean {
  return isIP(host) !== 0;
}
