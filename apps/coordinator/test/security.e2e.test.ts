/**
 * Channel security end to end: real coordinator and worker processes on 127.0.0.1, real TLS
 * with throwaway certificates made by openssl in a temporary folder. Each test guards one
 * promise of the Security section of the READMEs.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  type ChannelCredentials,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  type CoordinatorServiceClient,
  type GetStatusResponse,
  JobState,
  PROTOCOL_VERSION,
} from '@shardline/protocol';
import { makeCertificate } from '@shardline/test-support/certificates';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliPath, runCli } from './runCli.js';

const workerCli = fileURLToPath(new URL('../../worker/dist/cli.js', import.meta.url));

const SECRET = 'e2e-secret-5f1c9a7b3d2e4f60';
const WRONG = 'e2e-wrong-0a1b2c3d4e5f6789';
/** The smallest job that still trains: 4 steps of 64 images. */
const tiny = [
  '--model',
  'mlp',
  '--limit-train',
  '256',
  '--limit-test',
  '64',
  '--epochs',
  '1',
  '--batch-size',
  '64',
  '--log-format',
  'json',
];

let dir: string;
const pem = (name: string) => join(dir, name);

beforeAll(async () => {
  // openssl makes the certificates (Node can create keys but not sign X.509 certificates).
  expect(() => execFileSync('openssl', ['version'])).not.toThrow();
  dir = await mkdtemp(join(tmpdir(), 'shardline-security-'));
  makeCertificate(dir, 'ca', 'Shardline test CA', undefined, []);
  makeCertificate(dir, 'other-ca', 'Some other CA', undefined, []);
  const leaf = 'basicConstraints=critical,CA:FALSE';
  makeCertificate(dir, 'server', 'coordinator', 'ca', [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    leaf,
    // clientAuth too: under mutual TLS, local workers present the coordinator's certificate.
    'extendedKeyUsage=serverAuth,clientAuth',
  ]);
  makeCertificate(dir, 'client', 'worker', 'ca', [leaf, 'extendedKeyUsage=clientAuth']);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A coordinator process, with its address once it listens. */
interface Coordinator {
  address: string;
  /** Resolves with the exit status and all output once the process ends. */
  exit: Promise<{ code: number | null; stdout: string; stderr: string }>;
  stderr(): string;
  process: ChildProcess;
}

const running = new Set<ChildProcess>();
afterAll(() => {
  // A failed assertion must not leave a coordinator waiting for workers.
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

function startCoordinator(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Coordinator> {
  const child = spawn(process.execPath, [cliPath, 'train', '--listen', '127.0.0.1:0', ...args], {
    env: { ...cleanEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return new Promise((resolve, reject) => {
    let found = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      stdout += `${line}\n`;
      const event = JSON.parse(line) as { event: string; listen?: string };
      if (event.event === 'started' && !found) {
        found = true;
        resolve({ address: event.listen!, exit, stderr: () => stderr, process: child });
      }
    });
    void exit.then((r) => {
      if (!found)
        reject(new Error(`coordinator exited with ${r.code} before listening: ${r.stderr}`));
    });
  });
}

interface WorkerRun {
  code: number | null;
  stderr: string;
  seconds: number;
}

/** This process's environment without security settings, so only what a test gives counts. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^SHARDLINE_(TOKEN|TLS)/.test(k)),
  );
}

function runWorker(args: string[], env: NodeJS.ProcessEnv = {}): Promise<WorkerRun> {
  const started = Date.now();
  const child = spawn(process.execPath, [workerCli, '--backend', 'cpu', ...args], {
    env: { ...cleanEnv(), ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, stderr, seconds: (Date.now() - started) / 1000 })),
  );
}

function client(address: string, creds: ChannelCredentials = credentials.createInsecure()) {
  return new CoordinatorClient(address, creds, { ...CHANNEL_OPTIONS });
}

function metadata(headers: Record<string, string>): Metadata {
  const m = new Metadata();
  for (const [k, v] of Object.entries(headers)) m.set(k, v);
  return m;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: ServiceError };

/** Calls one method and settles with its outcome; Train is opened, then ended. */
function callMethod(
  c: CoordinatorServiceClient,
  method: 'join' | 'leave' | 'getStatus' | 'train' | 'fetchDataset',
  md: Metadata,
): Promise<Outcome> {
  const options = { deadline: Date.now() + 10_000 };
  return new Promise((resolve) => {
    const done = (error: ServiceError | null, value?: unknown) =>
      resolve(error ? { ok: false, error } : { ok: true, value });
    if (method === 'fetchDataset') {
      // The dataset is the most valuable thing a coordinator serves: no token, no bytes.
      const call = c.fetchDataset(
        { workerId: 'nobody', fingerprint: '0'.repeat(64), offset: 0n },
        md,
        options,
      );
      call.on('data', () => {});
      call.on('error', (e: ServiceError) => done(e));
      call.on('end', () => done(null));
      return;
    }
    if (method === 'train') {
      const call = c.train(md, options);
      call.on('data', () => {});
      call.on('error', (e: ServiceError) => done(e));
      call.on('end', () => done(null));
      return;
    }
    if (method === 'join') {
      c.join(
        {
          protocolVersion: PROTOCOL_VERSION,
          workerName: 'intruder',
          backend: 'cpu',
          hostname: 'h',
          pid: 1,
          supportedDtypes: [],
          capabilities: [],
          previousWorkerId: '',
          maxReceiveMessageBytes: 0,
          pluginSha256: [],
          softwareVersion: '',
          peerAddress: '',
        },
        md,
        options,
        done,
      );
    } else if (method === 'leave') {
      c.leave({ workerId: 'nobody', reason: '' }, md, options, done);
    } else {
      c.getStatus({}, md, options, done);
    }
  });
}

describe('token authentication', () => {
  it('refuses every method without the right token, logs it without the secret, and keeps serving', async () => {
    const out = join(dir, 'token-run');
    const coordinator = await startCoordinator([
      '--token',
      SECRET,
      '--local-workers',
      '0',
      '--min-workers',
      '1',
      '--out',
      out,
      ...tiny,
    ]);
    const c = client(coordinator.address);
    try {
      for (const method of ['join', 'train', 'leave', 'getStatus', 'fetchDataset'] as const) {
        for (const headers of [
          {},
          { authorization: `Bearer ${WRONG}` },
          { 'shardline-token': WRONG },
          { authorization: SECRET }, // the secret without the Bearer scheme is not a token
        ]) {
          const outcome = await callMethod(c, method, metadata(headers));
          expect(outcome.ok, `${method} with ${JSON.stringify(headers)}`).toBe(false);
          const error = (outcome as { error: ServiceError }).error;
          expect(error.code, `${method}: ${error.details}`).toBe(status.UNAUTHENTICATED);
          expect(error.details).not.toContain(SECRET);
          expect(error.details).not.toContain(WRONG);
          expect(error.details).toMatch(/--token or SHARDLINE_TOKEN/);
        }
      }
      // Still serving, and both headers work with the right token.
      for (const headers of [
        { authorization: `Bearer ${SECRET}` },
        { 'shardline-token': SECRET },
      ]) {
        const outcome = await callMethod(c, 'getStatus', metadata(headers));
        expect(outcome.ok).toBe(true);
        expect((outcome as { value: GetStatusResponse }).value.state).toBe(
          JobState.WAITING_FOR_WORKERS,
        );
      }
    } finally {
      c.close();
    }

    // A worker with the wrong token stops at once (no retries until --connect-timeout).
    const wrong = await runWorker(
      ['--coordinator', coordinator.address, '--connect-timeout', '60'],
      { SHARDLINE_TOKEN: WRONG },
    );
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(
      /the coordinator refused this worker's token: check --token \/ SHARDLINE_TOKEN/i,
    );
    expect(wrong.stderr).not.toContain(WRONG);
    expect(wrong.stderr).not.toContain(SECRET);
    expect(wrong.seconds).toBeLessThan(30);
    const none = await runWorker(['--coordinator', coordinator.address]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/requires a token and this worker sent none/);

    // The right token (from the environment, as recommended) trains the job to the end.
    const right = await runWorker(['--coordinator', coordinator.address, '--name', 'good'], {
      SHARDLINE_TOKEN: SECRET,
    });
    const result = await coordinator.exit;
    expect(right.code, right.stderr).toBe(0);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/"event":"done"/);
    // Refusals are logged with the method and the peer, never with either token.
    expect(result.stderr).toMatch(/refused a call without a valid token/);
    expect(result.stderr).toMatch(/shardline\.v1\.CoordinatorService\/GetStatus/);
    expect(result.stderr).toMatch(/127\.0\.0\.1:\d+/);
    expect(result.stderr).not.toContain(SECRET);
    expect(result.stderr).not.toContain(WRONG);
    expect(result.stdout).not.toContain(SECRET);
  });
});

describe('TLS', () => {
  it('refuses plaintext clients; a worker that trusts the CA trains; other workers stop with what to fix', async () => {
    const coordinator = await startCoordinator([
      '--tls-cert',
      pem('server.pem'),
      '--tls-key',
      pem('server.key'),
      '--local-workers',
      '0',
      '--min-workers',
      '1',
      '--out',
      join(dir, 'tls-run'),
      ...tiny,
    ]);
    const plain = client(coordinator.address);
    try {
      const outcome = await callMethod(plain, 'getStatus', new Metadata());
      expect(outcome.ok).toBe(false);
      expect((outcome as { error: ServiceError }).error.code).toBe(status.UNAVAILABLE);
    } finally {
      plain.close();
    }
    const secure = client(
      coordinator.address,
      credentials.createSsl(await readFile(pem('ca.pem'))),
    );
    try {
      expect((await callMethod(secure, 'getStatus', new Metadata())).ok).toBe(true);
    } finally {
      secure.close();
    }

    // A plaintext worker cannot tell a TLS coordinator from a missing one; it says what to try.
    const plainWorker = await runWorker([
      '--coordinator',
      coordinator.address,
      '--connect-timeout',
      '1',
    ]);
    expect(plainWorker.code).toBe(1);
    expect(plainWorker.stderr).toMatch(/If the coordinator serves TLS, pass --tls-ca/);
    // A certificate this worker cannot verify is final: no retrying until --connect-timeout.
    const untrusting = await runWorker(
      ['--coordinator', coordinator.address, '--connect-timeout', '60'],
      { SHARDLINE_TLS_CA: pem('other-ca.pem') },
    );
    expect(untrusting.code).toBe(1);
    expect(untrusting.stderr).toMatch(/certificate is not trusted.*--tls-ca/);
    expect(untrusting.seconds).toBeLessThan(30);

    const worker = await runWorker(['--coordinator', coordinator.address, '--name', 'tls'], {
      SHARDLINE_TLS_CA: pem('ca.pem'),
    });
    const result = await coordinator.exit;
    expect(worker.code, worker.stderr).toBe(0);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/"event":"done"/);
  });

  it('mutual TLS with a token: refuses clients without a certificate; local and remote workers with certificates train', async () => {
    // A config file the coordinator accepts (it has keepCheckpoints) and a worker would refuse
    // (an unknown key to it): a local worker that inherited SHARDLINE_CONFIG would stop.
    const coordinatorConfig = join(dir, 'coordinator-config.json');
    await writeFile(coordinatorConfig, JSON.stringify({ keepCheckpoints: 3 }));
    const coordinator = await startCoordinator(
      [
        '--tls-cert',
        pem('server.pem'),
        '--tls-key',
        pem('server.key'),
        '--tls-ca',
        pem('ca.pem'),
        // The local worker must get the CA, a client certificate and the token on its own.
        '--local-workers',
        '1',
        '--min-workers',
        '2',
        '--out',
        join(dir, 'mtls-run'),
        ...tiny,
      ],
      {
        SHARDLINE_TOKEN: SECRET,
        // Variables meant for the coordinator or for some other worker on this machine: the
        // local worker must not pick them up (each would stop it: a config file with a key it
        // does not know, a bad timeout, another CA).
        SHARDLINE_CONFIG: coordinatorConfig,
        SHARDLINE_CONNECT_TIMEOUT: 'soon',
        SHARDLINE_TLS_CA: pem('other-ca.pem'),
      },
    );
    const ca = await readFile(pem('ca.pem'));
    const token = metadata({ authorization: `Bearer ${SECRET}` });
    const noCert = client(coordinator.address, credentials.createSsl(ca));
    try {
      const outcome = await callMethod(noCert, 'getStatus', token);
      expect(outcome.ok).toBe(false);
      expect((outcome as { error: ServiceError }).error.code).toBe(status.UNAVAILABLE);
    } finally {
      noCert.close();
    }
    const withCert = client(
      coordinator.address,
      credentials.createSsl(
        ca,
        await readFile(pem('client.key')),
        await readFile(pem('client.pem')),
      ),
    );
    try {
      expect((await callMethod(withCert, 'getStatus', token)).ok).toBe(true);
      // A certificate is not a substitute for the token.
      const outcome = await callMethod(withCert, 'getStatus', new Metadata());
      expect((outcome as { error: ServiceError }).error.code).toBe(status.UNAUTHENTICATED);
    } finally {
      withCert.close();
    }

    const certless = await runWorker(['--coordinator', coordinator.address], {
      SHARDLINE_TLS_CA: pem('ca.pem'),
      SHARDLINE_TOKEN: SECRET,
    });
    expect(certless.code).toBe(1);
    expect(certless.stderr).toMatch(/requires a client certificate.*--tls-cert and --tls-key/);

    const remote = await runWorker(
      [
        '--coordinator',
        coordinator.address,
        '--name',
        'remote',
        '--tls-ca',
        pem('ca.pem'),
        '--tls-cert',
        pem('client.pem'),
        '--tls-key',
        pem('client.key'),
      ],
      { SHARDLINE_TOKEN: SECRET },
    );
    const result = await coordinator.exit;
    expect(remote.code, remote.stderr).toBe(0);
    expect(result.code, result.stderr).toBe(0);
    const done = result.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .at(-1);
    expect(done).toMatchObject({ event: 'done', workers: 2 });
    expect(result.stderr).not.toContain(SECRET);
  });
});

describe('startup checks', () => {
  it('refuses to listen beyond loopback with neither a token nor TLS, before creating anything', async () => {
    const out = join(dir, 'exposed');
    const run = await runCli([
      'train',
      '--listen',
      '0.0.0.0:0',
      '--local-workers',
      '0',
      '--out',
      out,
      ...tiny,
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /Refusing to listen on 0\.0\.0\.0:0 with neither a token nor TLS.*--insecure/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('says that security flags do nothing with --in-process, and trains', async () => {
    const run = await runCli(
      [
        'train',
        '--in-process',
        '--tls-cert',
        pem('server.pem'),
        '--tls-key',
        pem('server.key'),
        '--out',
        join(dir, 'in-process'),
        ...tiny,
      ],
      { SHARDLINE_TOKEN: SECRET },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(
      /--token\/--token-file, --tls-cert, --tls-key ignored: --in-process .* no channel to secure/,
    );
    expect(run.stderr).not.toContain(SECRET);
  });

  it('names the flag, what it expected and what it found for bad PEM files', async () => {
    const swapped = await runCli([
      'train',
      '--tls-cert',
      pem('server.key'),
      '--tls-key',
      pem('server.pem'),
      '--out',
      join(dir, 'bad-pem'),
      ...tiny,
    ]);
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toMatch(
      /--tls-cert .*server\.key is not a PEM certificate file: expected "-----BEGIN CERTIFICATE-----", found only "PRIVATE KEY".*swap/,
    );
    const mismatched = await runCli([
      'train',
      '--tls-cert',
      pem('server.pem'),
      '--tls-key',
      pem('client.key'),
      '--out',
      join(dir, 'bad-pem'),
      ...tiny,
    ]);
    expect(mismatched.stderr).toMatch(/does not belong to the certificate/);
    const missing = await runWorker(['--coordinator', '127.0.0.1:1', '--tls-ca', pem('nope.pem')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /Cannot read --tls-ca \/ SHARDLINE_TLS_CA .*nope\.pem \(no such file\): expected a PEM file/,
    );
    expect(existsSync(join(dir, 'bad-pem'))).toBe(false);
  });
});
