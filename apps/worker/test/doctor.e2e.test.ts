/**
 * `shardline-worker doctor` against a real coordinator (the built `shardline-coordinator`,
 * started with a token and waiting for workers): its gRPC health service says SERVING, and
 * GetStatus accepts the right token and refuses a wrong or missing one, each reported with
 * what to change.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../src/doctor.js';
import { runWorkerCli } from '../src/program.js';

const coordinatorCli = fileURLToPath(new URL('../../coordinator/dist/cli.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'shardline-doctor-e2e-'));
const token = randomBytes(24).toString('hex');
let coordinator: ChildProcess;
let address: string;

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('SHARDLINE_')),
  );
  return { ...env, ...extra };
}

beforeAll(async () => {
  coordinator = spawn(
    process.execPath,
    [
      coordinatorCli,
      'train',
      '--model',
      'mlp',
      '--epochs',
      '1',
      '--limit-train',
      '256',
      '--limit-test',
      '64',
      '--local-workers',
      '0',
      '--min-workers',
      '1',
      '--listen',
      '127.0.0.1:0',
      '--backend',
      'cpu',
      '--log-format',
      'json',
      '--out',
      join(dir, 'run'),
    ],
    { env: cleanEnv({ SHARDLINE_TOKEN: token }), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  coordinator.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  // The `started` event carries the address it got for port 0.
  address = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    coordinator.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buffered += s;
      for (const line of buffered.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const event = JSON.parse(line) as { event?: string; listen?: string };
          if (event.event === 'started' && event.listen) resolve(event.listen);
        } catch {
          // A line still being written; the next chunk completes it.
        }
      }
    });
    coordinator.on('exit', (code) =>
      reject(new Error(`coordinator exited with ${code}: ${stderr}`)),
    );
  });
});

afterAll(async () => {
  if (coordinator.exitCode === null && coordinator.signalCode === null) {
    const exited = new Promise((resolve) => coordinator.once('exit', resolve));
    coordinator.kill('SIGKILL');
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

async function doctor(args: string[], env: NodeJS.ProcessEnv) {
  let stdout = '';
  let stderr = '';
  const code = await runWorkerCli(
    ['node', 'shardline-worker', 'doctor', ...args],
    {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
    },
    { env },
  );
  return { code, stdout, stderr };
}

describe('doctor against a real coordinator', () => {
  it('finds it SERVING and its token accepted (token from a file, as from a Kubernetes Secret)', async () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${token}\n`);
    const { code, stdout } = await doctor(
      ['--json', '--backend', 'cpu'],
      cleanEnv({ SHARDLINE_COORDINATOR: address, SHARDLINE_TOKEN_FILE: tokenFile }),
    );
    const report = JSON.parse(stdout) as DoctorReport;
    expect(report.problems).toEqual([]);
    expect(code).toBe(0);
    expect(report.coordinator).toMatchObject({
      address,
      tls: false,
      token: true,
      reachable: true,
      health: 'SERVING',
      authorized: true,
      ok: true,
    });
    expect(report.coordinator!.job).toMatchObject({
      state: 'WAITING_FOR_WORKERS',
      model: 'mlp',
      workers: 0,
      step: '0',
    });
    expect(stdout).not.toContain(token);

    const text = await doctor(
      ['--backend', 'cpu', '--coordinator', address, '--token-file', tokenFile],
      cleanEnv(),
    );
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/\n {2}health +SERVING\n {2}token +accepted\n/);
    expect(text.stdout).toMatch(
      new RegExp(`\\nOK: this worker can train with cpu and reach ${address}\\.\\n$`),
    );
    expect(text.stdout + text.stderr).not.toContain(token);
  });

  it('reports a missing or wrong token as a problem, naming the setting to fix', async () => {
    const none = await doctor(['--json', '--backend', 'cpu', '--coordinator', address], cleanEnv());
    expect(none.code).toBe(1);
    const noneReport = JSON.parse(none.stdout) as DoctorReport;
    expect(noneReport.coordinator).toMatchObject({
      reachable: true,
      health: 'SERVING',
      authorized: false,
      ok: false,
    });
    expect(noneReport.problems).toEqual([
      `The coordinator requires a token and this worker sent none: check --token / SHARDLINE_TOKEN, which must equal the coordinator's (coordinator ${address}).`,
    ]);

    const wrong = await doctor(
      ['--json', '--backend', 'cpu', '--coordinator', address],
      cleanEnv({ SHARDLINE_TOKEN: 'not-the-right-token-at-all-0123' }),
    );
    expect(wrong.code).toBe(1);
    const wrongReport = JSON.parse(wrong.stdout) as DoctorReport;
    expect(wrongReport.coordinator!.authorized).toBe(false);
    expect(wrongReport.problems[0]).toMatch(
      /^The coordinator refused this worker's token: check --token \/ SHARDLINE_TOKEN/,
    );
    // The token travels in clear text to a loopback address: no warning for loopback.
    expect(wrongReport.warnings).toEqual([]);
  });
});
