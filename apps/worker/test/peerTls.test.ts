/**
 * Ring mode under TLS (peer/peerTls.ts, peer/openPeerEndpoint.ts), with real certificates made
 * by openssl, real peer endpoints on 127.0.0.1 and real handshakes. What it guards: a worker's
 * certificate is checked at startup for what its peers will check (server and client
 * authentication, the advertised host), and what it lacks is said with the fix; a TLS worker
 * serves its peer endpoint with mutual TLS only when it has a certificate and a CA, and never in
 * plaintext; the endpoint refuses callers without a certificate from its CA at the handshake;
 * two members all-reduce over TLS; and a handshake failure between members fails the step on
 * both sides promptly, naming the neighbour's address and what to change.
 */

import { credentials, status } from '@grpc/grpc-js';
import { createLogger, isShardlineError, type Logger, silentLogger } from '@shardline/core';
import { makeTestCertificates, type TestCertificates } from '@shardline/test-support/certificates';
import { ringCall } from '@shardline/test-support/peerProbe';
import { type RingResult, ringAllReduce } from '@shardline/training';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcRingLink, type GrpcRingLink } from '../src/peer/grpcRingLink.js';
import { openPeerEndpoint } from '../src/peer/openPeerEndpoint.js';
import { type PeerEndpoint, startPeerEndpoint } from '../src/peer/peerEndpoint.js';
import {
  checkPeerCertificate,
  explainPeerTlsFailure,
  type PeerTls,
  peerCertificateProblems,
  peerChannelCredentials,
} from '../src/peer/peerTls.js';
import { peerTlsGap, resolveWorkerChannel, type WorkerChannel } from '../src/security.js';

const TOKEN = 'peer-tls-token-0123456789abcdef';
/** How long both members may take to settle after a failed handshake, on a loaded machine. */
const SETTLE_MS = 5_000;

let certs: TestCertificates;
beforeAll(() => {
  certs = makeTestCertificates();
});
afterAll(() => certs.remove());

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The channel `resolveWorkerChannel` builds from these TLS flags and the token. */
function tlsChannel(flags: { cert?: string; ca?: string }): WorkerChannel {
  return resolveWorkerChannel(
    {
      tls: true,
      token: TOKEN,
      ...(flags.ca === undefined ? {} : { tlsCa: certs.path(flags.ca) }),
      ...(flags.cert === undefined
        ? {}
        : { tlsCert: certs.path(flags.cert), tlsKey: certs.path(flags.cert, 'key') }),
    },
    '127.0.0.1:7070',
    silentLogger,
  );
}

/** The peer TLS of a worker with certificate `cert` and CA `ca`. */
function peerTls(cert: string, ca = 'ca'): PeerTls {
  const tls = tlsChannel({ cert, ca }).peerTls;
  if (!tls) throw new Error(`no peer TLS for ${cert}`);
  return tls;
}

/** A logger that keeps its JSON records. */
function recorder(): { logger: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: 'debug',
    format: 'json',
    sink: { write: (line) => records.push(JSON.parse(line) as Record<string, unknown>) },
  });
  return { logger, records };
}

async function endpoint(tls: PeerTls | undefined): Promise<PeerEndpoint> {
  const peer = await startPeerEndpoint({
    settings: {},
    coordinator: '127.0.0.1:7070',
    token: TOKEN,
    ...(tls ? { tls } : {}),
    logger: silentLogger,
  });
  cleanups.push(() => peer.close());
  return peer;
}

describe('the certificate a worker serves its peer endpoint with and dials its peers with', () => {
  it('passes with serverAuth and clientAuth (or no extendedKeyUsage) and the advertised host listed', () => {
    expect(peerCertificateProblems(peerTls('peer-a').certificate, '127.0.0.1')).toEqual([]);
    const any = peerTls('no-usage').certificate;
    expect(peerCertificateProblems(any, '127.0.0.1')).toEqual([]);
    expect(peerCertificateProblems(any, '[::1]')).toEqual([]);
    expect(peerCertificateProblems(any, 'localhost')).toEqual([]);
    expect(peerCertificateProblems(peerTls('elsewhere').certificate, 'elsewhere.example')).toEqual(
      [],
    );
  });

  it('names each purpose it lacks, with the usages it has', () => {
    expect(peerCertificateProblems(peerTls('client-only').certificate, '127.0.0.1')).toEqual([
      'does not allow server authentication (its extendedKeyUsage is clientAuth)',
    ]);
    expect(peerCertificateProblems(peerTls('server-only').certificate, '127.0.0.1')).toEqual([
      'does not allow client authentication (its extendedKeyUsage is serverAuth)',
    ]);
  });

  it('names the host it does not list, and what it lists instead', () => {
    expect(peerCertificateProblems(peerTls('elsewhere').certificate, '127.0.0.1')).toEqual([
      'does not list 127.0.0.1 (it lists DNS:elsewhere.example)',
    ]);
    // An address written as a name is not an IP entry, as in Node's own check when dialling.
    expect(peerCertificateProblems(peerTls('peer-a').certificate, '10.0.0.6')).toEqual([
      'does not list 10.0.0.6 (it lists IP Address:127.0.0.1)',
    ]);
  });

  it('is refused with the file, the host, what it lacks and the three ways out', () => {
    const tls = peerTls('client-only');
    expect(() => checkPeerCertificate(tls, '10.0.0.6', 7071)).toThrow(
      new RegExp(
        `^Ring mode under TLS: the other workers dial this worker's peer endpoint at 10\\.0\\.0\\.6 and check its certificate, but --tls-cert ${tls.certPath.replace(/[.\\/]/g, '\\$&')} does not allow server authentication \\(its extendedKeyUsage is clientAuth\\) and does not list 10\\.0\\.0\\.6`,
      ),
    );
    try {
      checkPeerCertificate(tls, '10.0.0.6', 7071);
    } catch (error) {
      expect(isShardlineError(error) && error.code).toBe('INVALID_ARGUMENT');
      const message = (error as Error).message;
      expect(message).toContain(
        '-addext subjectAltName=IP:10.0.0.6 -addext extendedKeyUsage=serverAuth,clientAuth',
      );
      expect(message).toContain('--peer-listen <address>:7071 --peer-advertise <name>:7071');
      expect(message).toContain('--no-peer');
    }
  });
});

describe('which TLS channels serve a peer endpoint', () => {
  it('TLS with a certificate, its key and --tls-ca carries peer TLS; plaintext needs none', () => {
    expect(peerTlsGap(resolveWorkerChannel({}, '127.0.0.1:7070', silentLogger))).toBeUndefined();
    const tls = tlsChannel({ cert: 'peer-a', ca: 'ca' });
    expect(tls.peerTls?.certPath).toBe(certs.path('peer-a'));
    expect(peerTlsGap(tls)).toBeUndefined();
  });

  it('TLS without a client certificate, or without --tls-ca, serves none and says what it needs', async () => {
    const noCertificate = tlsChannel({ ca: 'ca' });
    expect(noCertificate.peerTls).toBeUndefined();
    expect(peerTlsGap(noCertificate)).toMatch(
      /^ring mode under TLS needs --tls-cert and --tls-key .* allows server and client authentication/,
    );
    const noCa = tlsChannel({ cert: 'peer-a' });
    expect(noCa.peerTls).toBeUndefined();
    expect(peerTlsGap(noCa)).toMatch(/^ring mode under TLS needs --tls-ca/);

    // Automatic settings: an info line (the default is not a mistake); asked-for ones: a warning.
    for (const [settings, level] of [
      [{}, 'info'],
      [{ listen: '127.0.0.1:0' }, 'warn'],
    ] as const) {
      const { logger, records } = recorder();
      const choice = await openPeerEndpoint({
        peer: settings,
        coordinator: '127.0.0.1:7070',
        channel: noCertificate,
        logger,
      });
      expect(choice.endpoint).toBeUndefined();
      expect(choice.why).toBe(peerTlsGap(noCertificate));
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ level });
      expect(records[0]!.msg).toMatch(
        /^no peer endpoint, so this worker joins without ring mode .*: ring mode under TLS needs --tls-cert and --tls-key/,
      );
    }
  });

  it('serves mutual TLS: a peer with a certificate from --tls-ca gets through, no certificate, another CA\u2019s or plaintext is refused at the handshake', async () => {
    const { logger, records } = recorder();
    const choice = await openPeerEndpoint({
      peer: {},
      coordinator: '127.0.0.1:7070',
      channel: tlsChannel({ cert: 'peer-a', ca: 'ca' }),
      logger,
    });
    const peer = choice.endpoint!;
    cleanups.push(() => peer.close());
    expect(peer.advertised).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(
      records.find((r) => r.msg === 'peer endpoint listening' && r.level === 'info'),
    ).toMatchObject({ tls: true });

    const admitted = await ringCall(
      peer.advertised,
      TOKEN,
      peerChannelCredentials(peerTls('peer-b')),
    );
    expect(admitted.code).toBe(status.INVALID_ARGUMENT);
    const ca = certs.read('ca');
    const refused = await Promise.all([
      ringCall(peer.advertised, TOKEN, credentials.createSsl(ca)),
      ringCall(
        peer.advertised,
        TOKEN,
        credentials.createSsl(ca, certs.read('stranger', 'key'), certs.read('stranger')),
      ),
      ringCall(peer.advertised, TOKEN),
    ]);
    expect(refused.map((e) => e.code)).toEqual(Array(3).fill(status.UNAVAILABLE));
    // No certificate: the server says so in the handshake, and the message says what to do.
    const none = explainPeerTlsFailure(refused[0]!, {
      address: peer.advertised,
      rank: 1,
      tls: true,
    });
    expect(none?.message).toMatch(/certificate required.*Start this worker with --tls-cert/);
    // Another CA's: the server only closes the connection; the message says what that means.
    const stranger = explainPeerTlsFailure(refused[1]!, {
      address: peer.advertised,
      rank: 1,
      tls: true,
    });
    expect(stranger?.message).toMatch(/refused this worker's certificate/);
  });

  it('a certificate that does not list the advertised host: automatic settings warn and serve none, asked-for ones fail', async () => {
    const channel = tlsChannel({ cert: 'elsewhere', ca: 'ca' });
    const { logger, records } = recorder();
    const choice = await openPeerEndpoint({
      peer: {},
      coordinator: '127.0.0.1:7070',
      channel,
      logger,
    });
    expect(choice.endpoint).toBeUndefined();
    expect(choice.why).toMatch(/does not list 127\.0\.0\.1 \(it lists DNS:elsewhere\.example\)/);
    expect(records).toEqual([
      expect.objectContaining({
        level: 'warn',
        msg: 'no peer endpoint: this worker joins without ring mode',
        reason: choice.why,
      }),
    ]);
    await expect(
      openPeerEndpoint({
        peer: { listen: '127.0.0.1:0' },
        coordinator: '127.0.0.1:7070',
        channel,
        logger: silentLogger,
      }),
    ).rejects.toThrow(/does not list 127\.0\.0\.1.*--peer-advertise.*--no-peer/);
    // Advertising a name the certificate lists is the way out.
    const named = await openPeerEndpoint({
      peer: { listen: '127.0.0.1:0', advertise: 'elsewhere.example:7071' },
      coordinator: '127.0.0.1:7070',
      channel,
      logger: silentLogger,
    });
    cleanups.push(() => named.endpoint?.close());
    expect(named.endpoint?.advertised).toBe('elsewhere.example:7071');
  });
});

describe('a ring over TLS', () => {
  /** A two-member ring between `endpoints`, each member dialling with its own peer TLS. */
  function formRing(endpoints: PeerEndpoint[], tls: PeerTls[], ringId: string): GrpcRingLink[] {
    const links = endpoints.map((peer, rank) =>
      createGrpcRingLink({
        server: peer.server,
        ringId,
        jobId: 'job-peer-tls',
        rank,
        worldSize: endpoints.length,
        workerId: `worker-${rank}`,
        right: {
          address: endpoints[(rank + 1) % endpoints.length]!.advertised,
          credentials: peerChannelCredentials(tls[rank]!),
          token: TOKEN,
        },
        logger: silentLogger,
      }),
    );
    cleanups.push(() => Promise.all(links.map((link) => link.close())));
    return links;
  }

  function allReduce(links: GrpcRingLink[]): Promise<RingResult>[] {
    return links.map((link, rank) =>
      ringAllReduce({
        rank,
        worldSize: links.length,
        link,
        gradient: new Float32Array(1000).fill(rank + 1),
        sampleCount: 1,
        step: 1,
        maxChunkBytes: 1024,
      }),
    );
  }

  it('all-reduces between two mutual-TLS endpoints, both members ending with the same average', async () => {
    const tls = [peerTls('peer-a'), peerTls('peer-b')];
    const endpoints = [await endpoint(tls[0]), await endpoint(tls[1])];
    const results = await Promise.all(allReduce(formRing(endpoints, tls, 'ring-tls-ok')));
    expect(results[0]!.checksum).toBe(results[1]!.checksum);
    expect([...results[0]!.gradient.slice(0, 3)]).toEqual([1.5, 1.5, 1.5]);
  });

  it('a member with another CA\u2019s certificate fails the step on both sides within a bound, each naming the peer\u2019s address and the fix', async () => {
    // Rank 1 trusts rank 0's CA, but holds a certificate rank 0 does not trust.
    const tls = [peerTls('peer-a'), peerTls('stranger', 'ca')];
    const endpoints = [await endpoint(tls[0]), await endpoint(tls[1])];
    const started = performance.now();
    const settled = await Promise.allSettled(
      allReduce(formRing(endpoints, tls, 'ring-tls-stranger')),
    );
    expect(performance.now() - started).toBeLessThan(SETTLE_MS);
    const [zero, one] = settled.map((s) => (s.status === 'rejected' ? String(s.reason) : 'ok'));
    // Rank 0 dialled rank 1 and could not verify its certificate.
    expect(zero).toContain(`TLS with the peer endpoint of rank 1 at ${endpoints[1]!.advertised}`);
    expect(zero).toMatch(/not signed by a CA in this worker's --tls-ca/);
    // Rank 1 dialled rank 0, which refused rank 1's certificate.
    expect(one).toContain(`TLS with the peer endpoint of rank 0 at ${endpoints[0]!.advertised}`);
    expect(one).toMatch(/refused this worker's certificate/);
  });
});

describe('explainPeerTlsFailure', () => {
  const failed = (details: string) => ({ code: status.UNAVAILABLE, details });
  const peer = { address: '10.0.0.6:7071', rank: 2, tls: true };

  it('says which neighbour and what to change for each handshake failure', () => {
    const explain = (details: string) => explainPeerTlsFailure(failed(details), peer)?.message;
    expect(
      explain(
        "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: IP: 10.0.0.6 is not in the cert's list: . Resolution note: ",
      ),
    ).toMatch(
      /^TLS with the peer endpoint of rank 2 at 10\.0\.0\.6:7071 failed \(Hostname\/IP does not match .*\): its certificate does not list the address it advertised.*--peer-advertise/,
    );
    expect(
      explain(
        'No connection established. Last error: Error: unsuitable certificate purpose. Resolution note: ',
      ),
    ).toMatch(/\(unsuitable certificate purpose\): .*extendedKeyUsage serverAuth,clientAuth/);
    expect(
      explain(
        'No connection established. Last error: Error: self-signed certificate in certificate chain. Resolution note: ',
      ),
    ).toMatch(/not signed by a CA in this worker's --tls-ca/);
    expect(explainPeerTlsFailure(failed('x'), peer)).toBeUndefined();
  });

  it('reads a connection closed during a TLS handshake as a refused certificate, and only under TLS', () => {
    const closed = failed(
      'No connection established. Last error: Failed to connect (2026-12-07T23:19:29.594Z). Resolution note: ',
    );
    expect(explainPeerTlsFailure(closed, peer)).toMatchObject({
      code: 'UNAUTHENTICATED',
      details: { peer: 2, address: '10.0.0.6:7071' },
    });
    expect(explainPeerTlsFailure(closed, { ...peer, tls: false })).toBeUndefined();
    expect(
      explainPeerTlsFailure(
        failed('No connection established. Last error: Error: connect ECONNREFUSED 10.0.0.6:7071.'),
        peer,
      ),
    ).toBeUndefined();
  });
});
