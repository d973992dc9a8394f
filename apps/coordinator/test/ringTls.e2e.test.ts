/**
 * Ring mode under mutual TLS, with the real CLIs and certificates made by openssl: a coordinator
 * that requires TLS, a client certificate from its CA and the token trains `--exchange ring`
 * with two remote workers, each with its own certificate (serverAuth and clientAuth, listing
 * 127.0.0.1). Their peer endpoints serve TLS and require a certificate from the same CA, so an
 * outsider that calls one without a certificate, with another CA's or in plaintext is refused
 * at the handshake, even with the token; the job carries on and its replicas agree.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import { makeCertificate, makeRingPeerCertificate } from '@shardline/test-support/certificates';
import { ringCall } from '@shardline/test-support/peerProbe';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killStarted, logged, startProcess, within, workerCli } from './processes.js';
import { cliPath } from './runCli.js';

const TOKEN = 'ring-tls-token-0123456789abcdef';
/**
 * 4 epochs of 16 steps of the MLP, about a second each here: the peers are called after the
 * first, while three more are still to train.
 */
const JOB = [
  'train',
  '--model',
  'mlp',
  '--epochs',
  '4',
  '--batch-size',
  '64',
  '--limit-train',
  '1024',
  '--limit-test',
  '200',
  '--exchange',
  'ring',
  '--local-workers',
  '0',
  '--min-workers',
  '2',
  '--listen',
  '127.0.0.1:0',
  '--log-format',
  'json',
];

let dir: string;
const file = (name: string, ext: 'pem' | 'key' = 'pem') => join(dir, `${name}.${ext}`);

beforeAll(async () => {
  expect(() => execFileSync('openssl', ['version'])).not.toThrow();
  dir = await mkdtemp(join(tmpdir(), 'shardline-ring-tls-'));
  makeCertificate(dir, 'ca', 'Shardline test CA', undefined, []);
  makeCertificate(dir, 'other-ca', 'Some other CA', undefined, []);
  makeCertificate(dir, 'coordinator', 'coordinator', 'ca', [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'extendedKeyUsage=serverAuth',
  ]);
  makeRingPeerCertificate(dir, 'worker-a', 'ca');
  makeRingPeerCertificate(dir, 'worker-b', 'ca');
  makeRingPeerCertificate(dir, 'stranger', 'other-ca');
});
afterEach(() => killStarted());
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ring mode under mutual TLS', () => {
  it('two remote workers all-reduce over TLS to the end with agreeing replicas; callers without a certificate from the CA are refused at the handshake', {
    timeout: 180_000,
  }, async () => {
    const env = { SHARDLINE_TOKEN: TOKEN };
    const coordinator = startProcess(
      cliPath,
      [
        ...JOB,
        '--tls-cert',
        file('coordinator'),
        '--tls-key',
        file('coordinator', 'key'),
        '--tls-ca',
        file('ca'),
        '--out',
        join(dir, 'run'),
      ],
      { env },
    );
    const started = await within(coordinator.event('started'), 60_000, 'the coordinator start');
    const workers = ['worker-a', 'worker-b'].map((name) =>
      startProcess(
        workerCli,
        [
          '--coordinator',
          String(started.listen),
          '--name',
          name,
          '--backend',
          'wasm',
          '--log-format',
          'json',
          '--tls-ca',
          file('ca'),
          '--tls-cert',
          file(name),
          '--tls-key',
          file(name, 'key'),
        ],
        { env },
      ),
    );
    const endpoints = await Promise.all(
      workers.map((worker, i) =>
        within(
          logged(worker, (r) => r.msg === 'peer endpoint listening' && r.level === 'info'),
          60_000,
          `worker ${i}'s peer endpoint`,
        ),
      ),
    );
    for (const endpoint of endpoints) {
      expect(endpoint).toMatchObject({
        tls: true,
        advertised: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      });
    }
    // Called while the ring trains (after the first epoch), so every endpoint is up and busy.
    await within(coordinator.event('epoch_end'), 120_000, 'the first epoch');
    const ca = readFileSync(file('ca'));
    const read = (name: string, ext: 'pem' | 'key' = 'pem') => readFileSync(file(name, ext));
    const calls: Array<{ who: string; code: number; details: string }> = [];
    for (const { advertised } of endpoints) {
      const address = String(advertised);
      const outsiders: Array<[string, ChannelCredentials]> = [
        ['no certificate', credentials.createSsl(ca)],
        ['another CA', credentials.createSsl(ca, read('stranger', 'key'), read('stranger'))],
        ['plaintext', credentials.createInsecure()],
        // The control: a certificate from the CA gets through TLS and the token.
        ['from the CA', credentials.createSsl(ca, read('worker-b', 'key'), read('worker-b'))],
      ];
      for (const [who, creds] of outsiders) {
        const error = await ringCall(address, TOKEN, creds);
        calls.push({ who, code: error.code, details: error.details });
      }
    }
    // Still training: the refusals came from live endpoints, not from a finished job.
    expect(coordinator.child.exitCode, coordinator.stderr().slice(-3000)).toBeNull();
    expect(calls.map((c) => [c.who, c.code])).toEqual(
      [0, 1].flatMap(() => [
        ['no certificate', status.UNAVAILABLE],
        ['another CA', status.UNAVAILABLE],
        ['plaintext', status.UNAVAILABLE],
        ['from the CA', status.INVALID_ARGUMENT],
      ]),
    );
    expect(calls.find((c) => c.who === 'no certificate')!.details).toMatch(/certificate required/);

    expect(await within(coordinator.closed, 120_000, 'the job'), coordinator.stderr()).toBe(0);
    const done = coordinator.events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', step: 64 });
    const epochs = coordinator.events.filter((e) => e.event === 'epoch_end');
    expect(epochs).toHaveLength(4);
    for (const epoch of epochs) {
      // Reported only when every replica holds the same weights.
      expect(epoch.replica_checksum).toMatch(/^[0-9a-f]{8}$/);
      expect(epoch.workers).toBe(2);
      expect(epoch.ring_bytes as number).toBeGreaterThan(0);
    }
    for (const worker of workers) expect(await within(worker.closed, 30_000, 'a worker')).toBe(0);
    // No step was retried: the ring never failed, outsiders notwithstanding.
    expect(coordinator.stderr()).not.toMatch(/ring all-reduce failed|retrying step/);
  });
});
