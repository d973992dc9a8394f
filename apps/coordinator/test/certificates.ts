import { execFileSync } from 'node:child_process';

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

/**
 * Makes `<dir>/<name>.pem` and `.key`, signed by `<dir>/<ca>.pem`: a worker certificate that
 * can take part in a ring under mutual TLS, since it serves its peer endpoint with it (server
 * authentication, for the host it advertises: 127.0.0.1 in tests) and dials its peers and the
 * coordinator with it (client authentication).
 */
export function makeRingPeerCertificate(dir: string, name: string, ca: string): void {
  makeCertificate(dir, name, name, ca, [
    'subjectAltName=IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'extendedKeyUsage=serverAuth,clientAuth',
  ]);
}
