/**
 * The README's Deployment section, on three emulated machines (network namespaces on one
 * virtual LAN): the coordinator on the first with a token file and TLS (its certificate issued
 * for its LAN address), and a worker on each of the three, dialling that address with the CA and
 * the token file. Each process sees only its own namespace, so every worker reaches the
 * coordinator across the LAN, as on real machines; the CLIs are the built ones.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCertificate } from '../../support/src/certificates.js';
import {
  createVirtualLan,
  inHost,
  type VirtualLan,
  virtualHostsUnavailable,
} from './virtualHosts.js';

const coordinatorCli = fileURLToPath(
  new URL('../../../apps/coordinator/dist/cli.js', import.meta.url),
);
const workerCli = fileURLToPath(new URL('../../../apps/worker/dist/cli.js', import.meta.url));

/** What a process printed and how it ended. */
interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

function collect(child: ChildProcess, timeoutMs: number): Promise<Finished> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves with the coordinator's `started` event (the port is open from then on). */
function started(child: ChildProcess): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (d: Buffer) => {
      buffered += d;
      for (const line of buffered.split('\n').slice(0, -1)) {
        const event = JSON.parse(line) as Record<string, unknown>;
        if (event.event === 'started') {
          child.stdout?.off('data', onData);
          resolve(event);
        }
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
    };
    child.stdout?.on('data', onData);
    child.once('close', (code) =>
      reject(new Error(`the coordinator exited (${code}) before starting`)),
    );
  });
}

const unavailable = virtualHostsUnavailable();

// Where namespaces cannot be made the suite is skipped, and its name says why.
const suiteName = `three machines on a LAN${unavailable ? ` (skipped: ${unavailable})` : ''}`;

describe.skipIf(unavailable !== undefined)(suiteName, () => {
  let lan: VirtualLan;
  let dir: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    lan = createVirtualLan(3);
    dir = await mkdtemp(join(tmpdir(), 'shardline-three-machines-'));
    const coordinatorAddress = lan.hosts[0]!.address;
    // As in the deployment guide: a private CA, and a server certificate naming the address
    // workers dial.
    makeCertificate(dir, 'ca', 'Shardline deployment CA', undefined, [
      'basicConstraints=critical,CA:TRUE',
      'keyUsage=critical,keyCertSign',
    ]);
    makeCertificate(dir, 'coordinator', 'coordinator', 'ca', [
      `subjectAltName=IP:${coordinatorAddress}`,
    ]);
  });

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    lan?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('trains with the coordinator on machine 1 and a worker on each machine, all across the LAN', async () => {
    const [machine1, machine2, machine3] = lan.hosts as [
      (typeof lan.hosts)[0],
      (typeof lan.hosts)[0],
      (typeof lan.hosts)[0],
    ];
    // The token as operators deploy it: a file readable by the service only (a mounted Secret,
    // a systemd credential), named by SHARDLINE_TOKEN_FILE on the workers.
    const token = randomBytes(24).toString('base64url');
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const tokenEnv = { SHARDLINE_TOKEN_FILE: tokenFile };
    const out = join(dir, 'run');
    const coordinator = inHost(
      machine1,
      [
        coordinatorCli,
        'train',
        '--listen',
        `${machine1.address}:7070`,
        '--local-workers',
        '0',
        '--min-workers',
        '3',
        '--tls-cert',
        join(dir, 'coordinator.pem'),
        '--tls-key',
        join(dir, 'coordinator.key'),
        '--model',
        'fast-cnn',
        '--epochs',
        '1',
        '--batch-size',
        '64',
        '--limit-train',
        '2048',
        '--limit-test',
        '512',
        '--out',
        out,
        '--log-format',
        'json',
      ],
      tokenEnv,
    );
    children.push(coordinator);
    const finishedCoordinator = collect(coordinator, 300_000);
    await started(coordinator);

    // Before starting workers, an operator checks machine 2 can train and reach the coordinator.
    const doctor = await collect(
      inHost(
        machine2,
        [
          workerCli,
          'doctor',
          '--json',
          '--coordinator',
          `${machine1.address}:7070`,
          '--tls-ca',
          join(dir, 'ca.pem'),
        ],
        tokenEnv,
      ),
      120_000,
    );
    expect(doctor.code, doctor.stdout + doctor.stderr).toBe(0);
    const report = JSON.parse(doctor.stdout) as {
      coordinator?: { reachable: boolean; health?: string; authorized?: boolean; tls: boolean };
    };
    expect(report.coordinator).toMatchObject({
      reachable: true,
      health: 'SERVING',
      authorized: true,
      tls: true,
    });

    const workers = [machine1, machine2, machine3].map((machine, i) => {
      const child = inHost(
        machine,
        [
          workerCli,
          '--coordinator',
          `${machine1.address}:7070`,
          '--tls-ca',
          join(dir, 'ca.pem'),
          '--name',
          `machine-${i + 1}`,
        ],
        tokenEnv,
      );
      children.push(child);
      return collect(child, 300_000);
    });

    const result = await finishedCoordinator;
    const workerResults = await Promise.all(workers);
    expect(result.code, result.stderr).toBe(0);
    for (const w of workerResults) expect(w.code, w.stderr).toBe(0);

    const events = result.stdout
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown> & { event: string });
    const joined = events.filter((e) => e.event === 'worker_joined');
    expect(joined.map((e) => e.worker).sort()).toEqual(['machine-1', 'machine-2', 'machine-3']);
    // The coordinator saw each worker arrive from its own machine's LAN address.
    expect(joined.map((e) => String(e.peer).replace(/:\d+$/, '')).sort()).toEqual(
      [machine1.address, machine2.address, machine3.address].sort(),
    );
    const done = events.find((e) => e.event === 'done');
    expect(done?.workers).toBe(3);
    // 2,048 images, one epoch: well above chance (0.10), the loosest line that still proves the
    // three workers trained one model together.
    expect(done?.test_accuracy as number).toBeGreaterThan(0.5);
    expect(existsSync(join(out, 'model', 'model.json'))).toBe(true);
    // The token never reaches the logs of any machine.
    for (const text of [
      result.stdout,
      result.stderr,
      doctor.stdout,
      ...workerResults.map((w) => w.stderr),
    ]) {
      expect(text).not.toContain(token);
    }
  });
});
