/**
 * Reading the PEM files of `--tls-cert`, `--tls-key` and `--tls-ca`, validated once at startup.
 * grpc-js accepts any bytes and fails later, at the first handshake, with an OpenSSL error that
 * names neither the flag nor the file; checking here turns that into a message that says which
 * flag, what was expected, what was found and what to do, before anything trains.
 */

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ShardlineError } from '@shardline/core/errors';

/** A PEM file of one or more certificates (a leaf and its chain, or a CA bundle). */
export interface CertificateFile {
  path: string;
  /** The file's bytes, as grpc-js wants them. */
  pem: Buffer;
  /** The certificates in file order; for a chain, the leaf comes first. */
  certificates: X509Certificate[];
}

/** A PEM private key file. */
export interface PrivateKeyFile {
  path: string;
  pem: Buffer;
  key: KeyObject;
}

/** The paths of one side's TLS files, and the flag names to quote in messages. */
export interface TlsPaths {
  cert?: string | undefined;
  key?: string | undefined;
  ca?: string | undefined;
}

/** The TLS files of one side, read and checked: `cert` and `key` come together or not at all. */
export interface TlsFiles {
  cert?: CertificateFile;
  key?: PrivateKeyFile;
  ca?: CertificateFile;
}

/** Flag names for messages; a worker adds its environment variables. */
export interface TlsFlagNames {
  cert: string;
  key: string;
  ca: string;
}

const DEFAULT_FLAGS: TlsFlagNames = { cert: '--tls-cert', key: '--tls-key', ca: '--tls-ca' };

const BEGIN = /-----BEGIN ([A-Z0-9 ]+)-----/g;

function readPem(path: string, flag: string, expected: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a folder'
            : (error as Error).message;
    throw new ShardlineError(
      code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT',
      `Cannot read ${flag} ${path} (${why}): expected a PEM file holding ${expected}. Check the path and that this user may read it.`,
      { cause: error },
    );
  }
}

function labels(text: string): string[] {
  return [...text.matchAll(BEGIN)].map((m) => m[1]!);
}

function describeFound(found: string[]): string {
  if (found.length === 0)
    return 'no PEM block at all (a DER file? Convert it with `openssl x509 -inform der -in FILE -out FILE.pem`)';
  return `only ${[...new Set(found)].map((l) => `"${l}"`).join(', ')}`;
}

/**
 * Reads a PEM file of certificates. `leaf` marks a file whose first certificate is this side's
 * own (`--tls-cert`): an expired or not-yet-valid one is refused, since every peer would refuse
 * it anyway. CA bundles may hold old certificates beside current ones, so their dates are not
 * checked.
 */
export function readCertificateFile(
  path: string,
  flag: string,
  options: { leaf: boolean; now?: Date } = { leaf: true },
): CertificateFile {
  const what = options.leaf ? 'a certificate (and optionally its chain)' : 'CA certificates';
  const pem = readPem(path, flag, what);
  const text = pem.toString('latin1');
  const found = labels(text);
  if (!found.includes('CERTIFICATE')) {
    const hint = found.some((l) => l.endsWith('PRIVATE KEY'))
      ? ` It holds a private key: did you swap ${flag} and ${flag === '--tls-cert' ? '--tls-key' : 'the key flag'}?`
      : found.includes('CERTIFICATE REQUEST')
        ? ' A certificate request must be signed first (`openssl x509 -req ...` or `openssl req -x509 -CA ...`).'
        : '';
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${flag} ${path} is not a PEM certificate file: expected "-----BEGIN CERTIFICATE-----", found ${describeFound(found)}.${hint}`,
    );
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const certificates = blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${flag} ${path}: certificate ${i + 1} of ${blocks.length} does not parse (${(error as Error).message}): expected a PEM X.509 certificate. Regenerate or re-export the file.`,
        { cause: error },
      );
    }
  });
  if (certificates.length === 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${flag} ${path} has a "BEGIN CERTIFICATE" line without a matching "END CERTIFICATE": the file is truncated. Copy it again.`,
    );
  }
  if (options.leaf) {
    const leaf = certificates[0]!;
    const now = options.now ?? new Date();
    if (new Date(leaf.validTo) < now) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${flag} ${path} (${leaf.subject.replace(/\n/g, ', ')}) expired on ${leaf.validTo}: peers refuse expired certificates. Issue a new one.`,
      );
    }
    if (new Date(leaf.validFrom) > now) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${flag} ${path} is not valid before ${leaf.validFrom}: peers would refuse it until then. Check this machine's clock, or issue one valid from now.`,
      );
    }
  }
  return { path, pem, certificates };
}

/** Reads an unencrypted PEM private key file. */
export function readPrivateKeyFile(path: string, flag: string): PrivateKeyFile {
  const pem = readPem(path, flag, 'a private key');
  const text = pem.toString('latin1');
  const found = labels(text);
  if (found.includes('ENCRYPTED PRIVATE KEY') || /Proc-Type:\s*4,ENCRYPTED/.test(text)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${flag} ${path} is encrypted with a passphrase, and Shardline has no way to ask for one: expected an unencrypted key. Decrypt it with \`openssl pkey -in ${path} -out key.pem\` and keep that file readable only by this user (chmod 600).`,
    );
  }
  if (!found.some((l) => l.endsWith('PRIVATE KEY'))) {
    const hint = found.includes('CERTIFICATE')
      ? ` It holds a certificate: did you swap ${flag} and ${flag === '--tls-key' ? '--tls-cert' : 'the certificate flag'}?`
      : '';
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${flag} ${path} is not a PEM private key: expected "-----BEGIN PRIVATE KEY-----" (or RSA/EC PRIVATE KEY), found ${describeFound(found)}.${hint}`,
    );
  }
  try {
    return { path, pem, key: createPrivateKey(pem) };
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${flag} ${path} does not parse as a private key (${(error as Error).message}). Regenerate or re-export it as unencrypted PEM.`,
      { cause: error },
    );
  }
}

/**
 * Reads `paths` and checks them as a set: a certificate needs its key and the other way round,
 * and the key must belong to the certificate.
 */
export function readTlsFiles(paths: TlsPaths, flags: TlsFlagNames = DEFAULT_FLAGS): TlsFiles {
  if ((paths.cert === undefined) !== (paths.key === undefined)) {
    const [given, missing] =
      paths.cert === undefined ? [flags.key, flags.cert] : [flags.cert, flags.key];
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${given} was given without ${missing}: a certificate and its private key go together. Pass both, or neither.`,
    );
  }
  const files: TlsFiles = {};
  if (paths.cert !== undefined && paths.key !== undefined) {
    const cert = readCertificateFile(paths.cert, flags.cert, { leaf: true });
    const key = readPrivateKeyFile(paths.key, flags.key);
    if (!cert.certificates[0]!.checkPrivateKey(key.key)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${flags.key} ${paths.key} does not belong to the certificate in ${flags.cert} ${paths.cert} (their public keys differ): expected the key generated with that certificate. Pass the matching pair.`,
      );
    }
    files.cert = cert;
    files.key = key;
  }
  if (paths.ca !== undefined) files.ca = readCertificateFile(paths.ca, flags.ca, { leaf: false });
  return files;
}

/**
 * Whether `chain` (leaf first, then intermediates) leads to one of `anchors`: each link is
 * checked by issuer name and signature. Dates and name constraints are left to the TLS stack;
 * this answers "would a peer that trusts `anchors` accept this chain", for choosing what to
 * hand local workers.
 */
export function chainsTo(
  chain: readonly X509Certificate[],
  anchors: readonly X509Certificate[],
): boolean {
  let current = chain[0];
  const pool = chain.slice(1);
  for (let depth = 0; current && depth <= chain.length; depth++) {
    const cert: X509Certificate = current;
    const signedBy = (issuer: X509Certificate) =>
      cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
    if (anchors.some(signedBy)) return true;
    current = pool.find(signedBy);
  }
  return false;
}

/** Whether `cert` signed itself (a root, or a self-signed leaf). */
export function isSelfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}
