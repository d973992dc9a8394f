/**
 * Certificates for the TLS tests of both apps (and tests/multihost): one openssl recipe, so a
 * change of curve, lifetime or flags reaches every TLS test at once.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Makes `<dir>/<name>.key` (P-256) and `<dir>/<name>.pem`, a certificate for `CN=<subject>`
 * signed by `<dir>/<ca>.pem` (self-signed when `ca` is undefined), with `ext` as -addext lines.
 * openssl does the signing: Node can create keys but not sign X.509 certificates.
 */
export function makeCertificate(
  dir: string,
  name: string,
  subject: string,
  ca: string | undefined,
  ext: string[],
): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${subject}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      ...(ca ? ['-CA', `${ca}.pem`, '-CAkey', `${ca}.key`] : []),
      ...ext.flatMap((e) => ['-addext', e]),
    ],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
}

const LEAF = 'basicConstraints=critical,CA:FALSE';
const BOTH_USAGES = 'extendedKeyUsage=serverAuth,clientAuth';

/**
 * Makes `<dir>/<name>.pem` and `.key`, signed by `<dir>/<ca>.pem`: a worker certificate that
 * can take part in a ring under mutual TLS, since it serves its peer endpoint with it (server
 * authentication, for the host it advertises: 127.0.0.1 in tests) and dials its peers and the
 * coordinator with it (client authentication). Its subject is `CN=<subject>`, `name` unless given.
 */
export function makeRingPeerCertificate(
  dir: string,
  name: string,
  ca: string,
  subject: string = name,
): void {
  makeCertificate(dir, name, subject, ca, ['subjectAltName=IP:127.0.0.1', LEAF, BOTH_USAGES]);
}

/**
 * The certificates the peer TLS tests use, in a temporary folder: `ca` and `other-ca`, and
 * leaves signed by `ca` unless named otherwise:
 * - `peer-a`, `peer-b`: serverAuth and clientAuth, listing IP 127.0.0.1 (what ring peers need);
 * - `no-usage`: no extendedKeyUsage at all (every purpose), listing 127.0.0.1 and localhost;
 * - `client-only`: clientAuth only; `server-only`: serverAuth only;
 * - `elsewhere`: both usages, listing only DNS:elsewhere.example;
 * - `stranger`: like `peer-a`, signed by `other-ca`.
 */
export interface TestCertificates {
  dir: string;
  /** `<dir>/<name>.pem` or `.key`. */
  path(name: string, ext?: 'pem' | 'key'): string;
  read(name: string, ext?: 'pem' | 'key'): Buffer;
  remove(): void;
}

/** Makes {@link TestCertificates} (about a second of openssl). */
export function makeTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'shardline-peer-tls-'));
  makeCertificate(dir, 'ca', 'Shardline test CA', undefined, []);
  makeCertificate(dir, 'other-ca', 'Some other CA', undefined, []);
  makeRingPeerCertificate(dir, 'peer-a', 'ca', 'worker-a');
  makeRingPeerCertificate(dir, 'peer-b', 'ca', 'worker-b');
  makeCertificate(dir, 'no-usage', 'worker-n', 'ca', [
    'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost',
    LEAF,
  ]);
  makeCertificate(dir, 'client-only', 'worker-c', 'ca', [
    'subjectAltName=IP:127.0.0.1',
    LEAF,
    'extendedKeyUsage=clientAuth',
  ]);
  makeCertificate(dir, 'server-only', 'worker-s', 'ca', [
    'subjectAltName=IP:127.0.0.1',
    LEAF,
    'extendedKeyUsage=serverAuth',
  ]);
  makeCertificate(dir, 'elsewhere', 'worker-e', 'ca', [
    'subjectAltName=DNS:elsewhere.example',
    LEAF,
    BOTH_USAGES,
  ]);
  makeRingPeerCertificate(dir, 'stranger', 'other-ca', 'worker-x');
  const path = (name: string, ext: 'pem' | 'key' = 'pem') => join(dir, `${name}.${ext}`);
  return {
    dir,
    path,
    read: (name, ext = 'pem') => readFileSync(path(name, ext)),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
