/**
 * `--health-listen` end to end: a real coordinator process serving TLS on --listen, and real gRPC
 * health clients in plaintext, as the kubelet's gRPC probes are. Each test guards one promise of
 * the flag: probes get answers on the health port when the main port serves TLS; that port
 * serves nothing but the health service; a flag that cannot work is refused before anything
 * is created.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, CoordinatorClient } from '@shardline/protocol';
import { makeCertificate } from '@shardline/test-support/certificates';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHealth } from './healthCheck.js';
import { cliPath, runCli } from './runCli.js';

const COORDINATOR_SERVICE = 'shardline.v1.CoordinatorService';
/** A job that never starts training here (it waits for a worker), so only the ports matter. */
const waiting = [
  '--model',
  'mlp',
  '--backend',
  'wasm',
  '--local-workers',
  '0',
  '--min-workers',
  '1',
  '--wait-timeout',
  '0',
  '--log-format',
  'json',
];

let dir: string;

beforeAll(async () => {
  expect(() => execFileSync('openssl', ['version'])).not.toThrow();
  dir = await mkdtemp(join(tmpdir(), 'shardline-health-'));
  makeCertificate(dir, 'server', 'coordinator', undefined, [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'extendedKeyUsage=serverAuth',
  ]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Calls GetStatus in plaintext without a token; resolves with the gRPC status code. */
function getStatusCode(address: string): Promise<number> {
  const client = new CoordinatorClient(address, credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise<number>((resolve) =>
    client.getStatus({}, new Metadata(), { deadline: new Date(Date.now() + 5000) }, (error) =>
      resolve(error ? error.code : status.OK),
    ),
  ).finally(() => client.close());
}

/** Starts a coordinator and resolves with its `started` event (or its exit, if it never starts). */
async function startCoordinator(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{
  child: ChildProcess;
  started: Record<string, unknown>;
  exit: Promise<number | null>;
}> {
  const child = spawn(process.execPath, [cliPath, 'train', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d;
  });
  const exit = new Promise<number | null>((resolve) => child.on('close', resolve));
  for await (const line of createInterface({ input: child.stdout! })) {
    const event = JSON.parse(line) as Record<string, unknown>;
    if (event.event === 'started') return { child, started: event, exit };
  }
  throw new Error(`the coordinator exited (${await exit}) before "started": ${stderr}`);
}

describe('--health-listen', () => {
  it('answers plaintext probes while --listen serves TLS, with the same statuses, and nothing else', async () => {
    const out = join(dir, 'run-tls');
    const { child, started, exit } = await startCoordinator(
      [
        ...waiting,
        '--listen',
        '127.0.0.1:0',
        '--health-listen',
        '127.0.0.1:0',
        '--tls-cert',
        join(dir, 'server.pem'),
        '--tls-key',
        join(dir, 'server.key'),
        '--out',
        out,
      ],
      // A token too: the health port must answer probes that carry none.
      { SHARDLINE_TOKEN: 'health-e2e-token-7c1d2e3f4a5b6c7d' },
    );
    try {
      const main = String(started.listen);
      const healthAddress = String(started.health_listen);
      expect(healthAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(healthAddress).not.toBe(main);
      // What the flag is for: on the health port, a plaintext probe gets SERVING for the server
      // and for the coordinator service...
      await expect(checkHealth(healthAddress, '')).resolves.toEqual({ status: 'SERVING' });
      await expect(checkHealth(healthAddress, COORDINATOR_SERVICE)).resolves.toEqual({
        status: 'SERVING',
      });
      // ...while the same probe against the TLS port cannot get an answer at all.
      await expect(checkHealth(main, '')).rejects.toMatchObject({ code: status.UNAVAILABLE });
      // The health port serves only the health service: the coordinator's own methods are
      // not there, token or not.
      expect(await getStatusCode(healthAddress)).toBe(status.UNIMPLEMENTED);
      // Unknown names are NOT_FOUND, as the health protocol specifies.
      await expect(checkHealth(healthAddress, 'no.such.Service')).rejects.toMatchObject({
        code: status.NOT_FOUND,
      });
      child.kill('SIGTERM');
      expect(await exit).toBe(0);
      // The port closes with the coordinator.
      await expect(checkHealth(healthAddress, '')).rejects.toMatchObject({
        code: status.UNAVAILABLE,
      });
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('refuses the port of --listen before creating anything', async () => {
    const out = join(dir, 'run-same-port');
    const run = await runCli([
      'train',
      ...waiting,
      '--listen',
      '127.0.0.1:7399',
      '--health-listen',
      '0.0.0.0:7399',
      '--out',
      out,
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /--health-listen 0\.0\.0\.0:7399 uses the port of --listen 127\.0\.0\.1:7399\. Give it another port/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('refuses --in-process, which serves no gRPC', async () => {
    const out = join(dir, 'run-in-process');
    const run = await runCli([
      'train',
      '--in-process',
      '--health-listen',
      '127.0.0.1:0',
      '--out',
      out,
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/--health-listen needs the distributed mode/);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a value that is not host:port', async () => {
    for (const bad of ['7071', 'localhost', 'host:70710', ':7071', 'a b:7071']) {
      const run = await runCli(['train', '--health-listen', bad]);
      expect(run.code, bad).not.toBe(0);
      expect(run.stderr, bad).toMatch(/--health-listen <host:port>.*Expected host:port/s);
    }
  });

  it('fails with the flag named when the health port cannot be bound', async () => {
    const taken: NetServer = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const run = await runCli([
        'train',
        ...waiting,
        '--listen',
        '127.0.0.1:0',
        '--health-listen',
        `127.0.0.1:${port}`,
        '--out',
        join(dir, 'run-taken'),
      ]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`Cannot listen on 127.0.0.1:${port} (--health-listen)`);
    } finally {
      taken.close();
    }
  });
});
