import { makeCertificate } from '../../worker/test/certificates.js';

// One openssl recipe for both apps' tests: the worker's test helpers are the lower layer.
export { makeCertificate };

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
